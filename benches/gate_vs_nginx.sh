#!/usr/bin/env bash
# Throughput and latency through the gate with HTTP Basic auth (argon2 hash at rest) in front of
# a static upstream, against nginx with auth_basic ({SHA} hash) in front of the same upstream,
# and the upstream alone, in one run on one machine. Figures go to BENCHMARKS.md.
#
#   benches/gate_vs_nginx.sh            # 10 s per run, 50 connections
#   DURATION=30s CONNECTIONS=100 benches/gate_vs_nginx.sh
#
# Installs nginx and wrk from Debian's packages if they are missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    apt-get update -qq && apt-get install -y -qq nginx wrk >/dev/null
fi
# benches/compare.sh builds everything once and sets PREBUILT: building here again would
# rebuild the agent with other features than the cargo bench runs use.
[ -n "${PREBUILT:-}" ] || cargo build --release --quiet
BIN=$PWD/target/release/redtether

work=$(mktemp -d)
chmod 755 "$work"   # nginx workers run as another user and read the htpasswd file
cleanup() {
    [ -n "${agent:-}" ] && kill "$agent" 2>/dev/null && wait "$agent" 2>/dev/null
    for pid in "$work"/upstream.pid "$work"/auth.pid; do [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UPSTREAM=$(free_port); NGINX=$(free_port); GATE=$(free_port)
USER=bench; PASSWORD=bench-password
AUTH="Authorization: Basic $(printf '%s:%s' "$USER" "$PASSWORD" | base64 -w0)"

# nginx: the static upstream, and an auth_basic proxy in front of it.
SHA=$(printf '%s' "$PASSWORD" | openssl dgst -binary -sha1 | base64)
echo "$USER:{SHA}$SHA" > "$work/htpasswd"
# Two nginx instances, so that the upstream is another process for both proxies (as Node-RED is
# for the gate): in one instance, a worker could often proxy to itself without a context switch.
nginx_conf() {
    cat <<CONF
worker_processes 2;
pid $work/$1.pid;
error_log $work/$1.error.log;
events { worker_connections 4096; }
http {
    access_log off;
    $2
}
CONF
}
nginx_conf upstream "server { listen 127.0.0.1:$UPSTREAM; location / { return 200 \"hello from the upstream\\n\"; } }" > "$work/upstream.conf"
nginx_conf auth "upstream static { server 127.0.0.1:$UPSTREAM; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX;
        location / {
            auth_basic \"bench\";
            auth_basic_user_file $work/htpasswd;
            proxy_pass http://static;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }" > "$work/auth.conf"
nginx -c "$work/upstream.conf" -p "$work"
nginx -c "$work/auth.conf" -p "$work"

# The agent: its "Node-RED" is a placeholder process, and its fixed Node-RED port is the static
# upstream, so the gate forwards to the same server nginx does.
HASH=$(printf '%s\n' "$PASSWORD" | "$BIN" passwd)
cat > "$work/agent.toml" <<CONF
state_dir = "$work/state"
log_level = "warn"
[node_red]
command = ["sh", "-c", "exec sleep 100000", "placeholder"]
port = $UPSTREAM
[gate]
listen = "127.0.0.1:$GATE"
[gate.http_auth]
mode = "basic"
user = "$USER"
password_hash = "$HASH"
CONF
"$BIN" run --config "$work/agent.toml" 2>"$work/agent.log" &
agent=$!
for _ in $(seq 1 100); do
    "$BIN" status --json --config "$work/agent.toml" 2>/dev/null | grep -q '"state":"running"' && break
    sleep 0.1
done

check() { curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" "$1"; }
[ "$(check "http://127.0.0.1:$GATE/bench")" = 200 ] || { echo "gate not serving"; cat "$work/agent.log"; exit 1; }
[ "$(check "http://127.0.0.1:$NGINX/bench")" = 200 ] || { echo "nginx not serving"; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GATE/bench")" = 401 ] || { echo "gate does not ask for auth"; exit 1; }

# CPU ticks (user + system) used so far by the processes serving a port: the agent for the
# gate, the worker processes of the nginx instance otherwise.
ticks() {
    local pids
    case $1 in
        "$GATE") pids=$agent ;;
        "$NGINX") pids=$(pgrep -P "$(cat "$work/auth.pid")") ;;
        *) pids=$(pgrep -P "$(cat "$work/upstream.pid")") ;;
    esac
    for p in $pids; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s}'
}
# wrk's Latency Distribution, in milliseconds, requests per second, and the CPU the server
# spent per request in µs; $2 connections.
run() {
    local out port=${1#http://127.0.0.1:}
    port=${port%%/*}
    local before
    before=$(ticks "$port")
    out=$(wrk -t"$(( $2 < THREADS ? $2 : THREADS ))" -c"$2" -d"$DURATION" --latency -H "$AUTH" "$1")
    local spent=$(( $(ticks "$port") - before ))
    local rps p50 p99 requests
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    echo "$rps $(to_ms "$p50") $(to_ms "$p99") $(python3 -c "import os,sys; print(round(int(sys.argv[1]) / os.sysconf('SC_CLK_TCK') * 1e6 / max(int(sys.argv[2]), 1), 1))" "$spent" "$requests")"
}
to_ms() { python3 -c "import sys,re; v=sys.argv[1]; n=float(re.match(r'[0-9.]+',v).group()); u=v[len(re.match(r'[0-9.]+',v).group()):]; print(round(n*{'us':0.001,'ms':1,'s':1000}[u],3))" "$1"; }

wrk -t1 -c10 -d2s -H "$AUTH" "http://127.0.0.1:$GATE/bench" >/dev/null   # warm the credential cache
results=()
for c in "$CONNECTIONS" 1; do
    for port in "$UPSTREAM" "$NGINX" "$GATE"; do
        results+=("$(run "http://127.0.0.1:$port/bench" "$c")")
    done
done
rss=$(awk '/VmRSS/ {print $2}' "/proc/$agent/status")

python3 - "$rss" "$DURATION" "$CONNECTIONS" "${results[@]}" <<'PY'
import sys
rss, duration, conns = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = [list(map(float, r.split())) for r in sys.argv[4:]]
names = ["static upstream alone (nginx `return 200`)", "nginx auth_basic ({SHA}) + proxy_pass", "redtether gate, Basic (argon2id at rest)"]
for block, c in ((rows[:3], conns), (rows[3:], "1")):
    up = block[0]
    print(f"\nwrk, {c} connection(s), {duration}, Basic auth on every request")
    print("| target | requests/s | p50 | p99 | p50 over upstream | server CPU per request |")
    print("|---|---|---|---|---|---|")
    for name, (rps, p50, p99, cpu) in zip(names, block):
        over = "" if name.startswith("static") else f"+{p50-up[1]:.3f} ms"
        print(f"| {name} | {rps:,.0f} | {p50:.3f} ms | {p99:.3f} ms | {over} | {cpu:.1f} µs |")
    print(f"gate / nginx throughput: {block[2][0]/block[1][0]:.2f}x")
    if c == conns:
        # For benches/compare.sh: metric, ours, baseline.
        print(f"compare|gate_rps|{block[2][0]:.0f}|{block[1][0]:.0f}")
print(f"gate RSS after the runs: {rss/1024:.1f} MiB")
PY
