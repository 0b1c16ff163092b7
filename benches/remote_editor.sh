#!/usr/bin/env bash
# The remote editor's path, hub → QUIC tunnel → gate → upstream, against the same upstream
# direct and through the gate alone (a LAN user), in one run on one machine; bulk throughput of
# one stream through the whole path against raw quinn (benches/tunnel.rs, ONLY=bulk); and the
# audit drain rate after the hub comes back. Figures go to BENCHMARKS.md.
#
#   benches/remote_editor.sh                 # 10 s per wrk run
#   DURATION=30s CONNECTIONS=100 benches/remote_editor.sh
#
# Installs nginx and wrk from Debian's packages if they are missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}
BULK_MIB=${BULK_MIB:-256}

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    apt-get update -qq && apt-get install -y -qq nginx wrk >/dev/null
fi
# benches/compare.sh builds everything once and sets PREBUILT: building here again would
# rebuild the agent with other features than the cargo bench runs use.
[ -n "${PREBUILT:-}" ] || cargo build --release --quiet
BIN=$PWD/target/release/redtether
HUB=$PWD/target/release/redtether-hub

work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
    for p in ${agent:-} ${hub:-}; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    [ -f "$work/upstream.pid" ] && kill "$(cat "$work/upstream.pid")" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_udp() { python3 -c 'import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UPSTREAM=$(free_port); GATE=$(free_port); API=$(free_port); QUIC=$(free_udp)

# The static upstream: a small answer, and a large file for the bulk figure.
head -c "$((BULK_MIB << 20))" /dev/zero > "$work/big"
# Written back now, not by the kernel's flusher 30 s later (dirty_expire_centisecs), which landed
# in the middle of the 1-connection runs and gave the remote editor's p99 a tail of 4 to 19 ms
# that was this script's own disk traffic, not the path under test.
sync "$work/big"
cat > "$work/upstream.conf" <<CONF
worker_processes 2;
pid $work/upstream.pid;
error_log $work/upstream.error.log;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$UPSTREAM;
        location = /device-editor/big { alias $work/big; default_type application/octet-stream; }
        location / { return 200 "hello from the upstream\n"; }
    }
}
CONF
nginx -c "$work/upstream.conf" -p "$work"

# The hub.
cat > "$work/hub.toml" <<CONF
state_dir = "$work/hub"
log_level = "warn"
listen = "127.0.0.1:$QUIC"
api_listen = "127.0.0.1:$API"
CONF
"$HUB" run --config "$work/hub.toml" 2>"$work/hub.log" &
hub=$!
for _ in $(seq 1 100); do [ -S "$work/hub/control.sock" ] && break; sleep 0.1; done

# The agent: its "Node-RED" is the static upstream (as in gate_vs_nginx.sh); an owner for the
# LAN figure and a viewer whose refused writes make audit events for the drain figure.
OWNER_HASH=$(printf 'owner-pw\n' | "$BIN" passwd)
VIEWER_HASH=$(printf 'viewer-pw\n' | "$BIN" passwd)
cat > "$work/agent.toml" <<CONF
state_dir = "$work/state"
log_level = "warn"
[node_red]
command = ["sh", "-c", "exec sleep 100000", "placeholder"]
port = $UPSTREAM
[gate]
listen = "127.0.0.1:$GATE"
[[gate.users]]
name = "owner"
role = "owner"
password_hash = "$OWNER_HASH"
[[gate.users]]
name = "viewer"
role = "viewer"
password_hash = "$VIEWER_HASH"
CONF
"$BIN" run --config "$work/agent.toml" 2>"$work/agent.log" &
agent=$!
status() { "$BIN" status --json --config "$work/agent.toml" 2>/dev/null; }
for _ in $(seq 1 100); do status | grep -q '"gate"' && break; sleep 0.1; done
"$BIN" enroll --config "$work/agent.toml" --hub "127.0.0.1:$QUIC" \
    --token "$("$HUB" enroll-token --device bench --config "$work/hub.toml")" \
    --ca-fingerprint "$("$HUB" ca-fingerprint --config "$work/hub.toml")" >/dev/null
for _ in $(seq 1 100); do status | grep -q '"state":"online"' && break; sleep 0.1; done
TOKEN=$("$HUB" operator add --name bench --role owner --token --expires 1d --config "$work/hub.toml")

BEARER="Authorization: Bearer $TOKEN"
BASIC="Authorization: Basic $(printf 'owner:owner-pw' | base64 -w0)"
DIRECT="http://127.0.0.1:$UPSTREAM/device-editor/bench"
LAN="http://127.0.0.1:$GATE/device-editor/bench"
REMOTE="http://127.0.0.1:$API/devices/bench/editor/bench"
code() { curl -s -o /dev/null -w '%{http_code}' -H "$1" "$2"; }
[ "$(code "$BASIC" "$LAN")" = 200 ] || { echo "gate not serving"; cat "$work/agent.log"; exit 1; }
[ "$(code "$BEARER" "$REMOTE")" = 200 ] || { echo "hub not serving the editor"; cat "$work/hub.log"; exit 1; }

to_ms() { python3 -c "import sys,re; v=sys.argv[1]; n=float(re.match(r'[0-9.]+',v).group()); u=v[len(re.match(r'[0-9.]+',v).group()):]; print(round(n*{'us':0.001,'ms':1,'s':1000}[u],3))" "$1"; }
run() {  # url header connections → "rps p50 p99"
    local out
    out=$(wrk -t"$(( $3 < THREADS ? $3 : THREADS ))" -c"$3" -d"$DURATION" --latency -H "$2" "$1")
    echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")") $(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")"
}
wrk -t1 -c4 -d2s -H "$BASIC" "$LAN" >/dev/null
wrk -t1 -c4 -d2s -H "$BEARER" "$REMOTE" >/dev/null
results=()
for c in 1 "$CONNECTIONS"; do
    results+=("$(run "$DIRECT" "X-Bench: 1" "$c")" "$(run "$LAN" "$BASIC" "$c")" "$(run "$REMOTE" "$BEARER" "$c")")
done

# Bulk: one download through the whole path, against raw quinn in this run.
speed() { curl -s -o /dev/null -w '%{speed_download}' -H "$1" "$2"; }
bulk_direct=$(speed "X-Bench: 1" "http://127.0.0.1:$UPSTREAM/device-editor/big")
bulk_lan=$(speed "$BASIC" "http://127.0.0.1:$GATE/device-editor/big")
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
faults() { awk '{print $10}' "/proc/$1/stat"; }   # minor page faults so far
h0=$(ticks "$hub"); a0=$(ticks "$agent"); f0=$(faults "$agent"); t0=$(date +%s.%N)
bulk_remote=$(speed "$BEARER" "http://127.0.0.1:$API/devices/bench/editor/big")
h1=$(ticks "$hub"); a1=$(ticks "$agent"); f1=$(faults "$agent"); t1=$(date +%s.%N)
cpu=$(python3 -c "import os,sys; hz=os.sysconf('SC_CLK_TCK'); t=float(sys.argv[5])-float(sys.argv[4]); print(f'hub {100*(int(sys.argv[1]))/hz/t:.0f} %, agent {100*(int(sys.argv[2]))/hz/t:.0f} % of a core')" "$((h1-h0))" "$((a1-a0))" x "$t0" "$t1")
raw_quinn=$(ONLY=bulk cargo bench --quiet --bench tunnel 2>/dev/null | awk '/raw quinn bulk:/ {print $4}')

# Audit drain: the hub goes away, refused writes fill the journal, the hub comes back.
kill -9 "$hub"; wait "$hub" 2>/dev/null || true
cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
LUA
VIEWER="Authorization: Basic $(printf 'viewer:viewer-pw' | base64 -w0)"
made=$(wrk -t2 -c8 -d3s -s "$work/post.lua" -H "$VIEWER" "http://127.0.0.1:$GATE/device-editor/flows" | awk '/requests in/ {print $1}')
last=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["audit"]["last_seq"])')
backlog=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["audit"]["backlog"])')
connects() { status | python3 -c 'import json,sys; print(json.load(sys.stdin)["tunnel"]["connects"])'; }
before=$(connects)
started=$(date +%s.%N)
"$HUB" run --config "$work/hub.toml" 2>>"$work/hub.log" &
hub=$!
acked() { curl -s -H "$BEARER" "http://127.0.0.1:$API/api/devices/bench" | python3 -c 'import json,sys; print(json.load(sys.stdin)["audit"]["acked"])' 2>/dev/null || echo 0; }
online_at=""
while :; do
    [ -z "$online_at" ] && [ "$(connects)" -gt "$before" ] && online_at=$(date +%s.%N)
    [ "$(acked)" -ge "$last" ] && break
    sleep 0.05
done
done_at=$(date +%s.%N)

echo "CPU during the bulk download through the tunnel: $cpu; agent page faults $((f1 - f0))"
python3 - "$CONNECTIONS" "$DURATION" "$bulk_direct" "$bulk_lan" "$bulk_remote" "${raw_quinn:-0}" "$made" "$backlog" "$started" "${online_at:-$started}" "$done_at" "${results[@]}" <<'PY'
import sys
conns, duration = sys.argv[1], sys.argv[2]
bulk_direct, bulk_lan, bulk_remote = (float(v) / 2**20 for v in sys.argv[3:6])
raw_quinn = float(sys.argv[6])
made, backlog, started, online_at, done_at = int(sys.argv[7]), int(sys.argv[8]), float(sys.argv[9]), float(sys.argv[10]), float(sys.argv[11])
rows = [list(map(float, r.split())) for r in sys.argv[12:]]
names = ["upstream direct", "gate (LAN owner, Basic)", "hub → tunnel → gate (operator, Bearer)"]
for block, c in ((rows[:3], "1"), (rows[3:], conns)):
    up = block[0]
    print(f"\nwrk, {c} connection(s), {duration}")
    print("| path | requests/s | p50 | p99 | p50 / p99 over direct |")
    print("|---|---|---|---|---|")
    for name, (rps, p50, p99) in zip(names, block):
        over = "" if name == names[0] else f"+{p50-up[1]:.3f} ms / +{p99-up[2]:.3f} ms"
        print(f"| {name} | {rps:,.0f} | {p50:.3f} ms | {p99:.3f} ms | {over} |")
    if c == "1":
        # For benches/compare.sh: metric, ours, baseline.
        print(f"compare|editor_p50|{block[2][1]:.3f}|{up[1]:.3f}")
        print(f"compare|editor_p99|{block[2][2]:.3f}|{up[2]:.3f}")
print(f"\nbulk, one download: direct {bulk_direct:.1f} MiB/s; gate {bulk_lan:.1f} MiB/s; hub → tunnel → gate {bulk_remote:.1f} MiB/s; raw quinn one stream {raw_quinn:.1f} MiB/s; ratio to raw quinn {bulk_remote / raw_quinn if raw_quinn else 0:.2f}")
print(f"compare|editor_bulk|{bulk_remote:.1f}|{raw_quinn:.1f}")
drain = done_at - online_at
print(f"audit drain: {made} refused writes made {backlog} events waiting; hub start → agent online {online_at - started:.2f} s; online → all acked {drain:.2f} s = {backlog / drain if drain > 0 else 0:,.0f} events/s")
PY
