#!/usr/bin/env bash
# Boots the host .deb under a real systemd: a minimal Debian 12 root made with debootstrap
# (cached in target/boot-test/rootfs, with Debian's nodejs and npm), the package installed with
# dpkg, the fixture Node-RED from the tests copied in, booted with `systemd-nspawn -b`. A report
# unit inside checks the agent and powers the container off; this script prints the report and
# fails if anything in it failed. Needs root; installs systemd-container and debootstrap if
# missing. Run after packaging/build.sh and the tests (which install the fixture Node-RED).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=target/boot-test/rootfs
fail() { echo "boot test: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root"
if ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd-container debootstrap >/dev/null
fi
deb=$(ls target/packages/redtether_*_"$(dpkg --print-architecture)".deb 2>/dev/null | head -1)
[ -n "$deb" ] || fail "no .deb (run packaging/build.sh)"
red=target/tmp/test-deps/node-red
[ -f "$red/node_modules/node-red/red.js" ] || fail "no fixture Node-RED in $red (run tests/run.sh)"

if [ ! -x "$ROOT/usr/bin/npm" ]; then
    rm -rf "$ROOT"
    mkdir -p "$(dirname "$ROOT")"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates,adduser bookworm "$ROOT" >/dev/null
    chroot "$ROOT" apt-get install -y -qq nodejs npm >/dev/null
fi

# The container trusts what this machine trusts (a network that intercepts TLS has its CA here).
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    chroot "$ROOT" update-ca-certificates >/dev/null 2>&1
fi

# The package, as a user would install it.
cp "$deb" "$ROOT/tmp/redtether.deb"
chroot "$ROOT" dpkg -P redtether >/dev/null 2>&1 || true
rm -rf "$ROOT/var/lib/redtether"
chroot "$ROOT" dpkg -i /tmp/redtether.deb >/dev/null
rm -rf "$ROOT/opt/node-red" && mkdir -p "$ROOT/opt" && cp -a "$red" "$ROOT/opt/node-red"
# NODE_RED=npm: no Node-RED given, so the agent installs node-red@4.1 with npm inside the
# hardened unit (needs the npm registry; a few minutes). Default: the tests' fixture Node-RED.
if [ "${NODE_RED:-fixture}" = npm ]; then
    printf '[node_red]\nhealth_interval = "1s"\n' > "$ROOT/etc/redtether/agent.toml"
else
    printf '[node_red]\ncommand = ["node", "/opt/node-red/node_modules/node-red/red.js"]\nhealth_interval = "1s"\n' > "$ROOT/etc/redtether/agent.toml"
fi
# A short watchdog, so that the test does not wait 30 s for it.
mkdir -p "$ROOT/etc/systemd/system/redtether.service.d"
printf '[Service]\nWatchdogSec=6s\n' > "$ROOT/etc/systemd/system/redtether.service.d/boot-test.conf"
# The documented drop-in for gateways with serial ports, GPIO, I2C, CAN and Bluetooth, applied as
# the example says: the agent must still start and run Node-RED with it.
cp "$ROOT/usr/share/doc/redtether/examples/devices.conf" "$ROOT/etc/systemd/system/redtether.service.d/devices.conf"

cat > "$ROOT/usr/local/sbin/boot-report" <<'EOF'
#!/bin/bash
# Runs inside the container once the agent was started; writes /root/report, then powers off.
exec > /root/report 2>&1
prop() { systemctl show -p "$1" --value redtether; }
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fi; }
wait_for() { for _ in $(seq 1 "$2"); do "$1" && return 0; sleep 1; done; return 1; }
running() { [ "$(prop ActiveState)/$(prop SubState)" = active/running ]; }
node_red_running() { prop StatusText | grep -q "Node-RED running"; }
restarted() { [ "$(prop NRestarts)" -gt "$before" ]; }

check "the unit verifies with the devices drop-in" 'systemd-analyze verify redtether.service'
echo "exposure with the devices drop-in: $(systemd-analyze security redtether.service 2>/dev/null | awk '/Overall exposure level/ {print $(NF-2), $(NF-1)}')"
check "active (running) through Type=notify" 'wait_for running 60'
check "Node-RED running, as the status text says" 'wait_for node_red_running 400'
echo "status text: $(prop StatusText)"
node_pid=$(prop StatusText | sed -n 's/.*(pid \([0-9]*\)).*/\1/p')
check "Node-RED runs inside the unit" 'grep -q "redtether.service" /proc/$node_pid/cgroup && grep -q "^node" /proc/$node_pid/comm'
check "the gate serves the editor" 'node -e "require(\"http\").get(\"http://127.0.0.1:1880/device-editor/\", r => process.exit(r.statusCode === 200 ? 0 : 1)).on(\"error\", () => process.exit(1))"'
check "journald has the structured fields" 'journalctl -u redtether -o json | grep -q "\"GATE\""'
check "the agent runs as the redtether user" '[ "$(stat -c %U /proc/$(prop MainPID))" = redtether ]'
hub_up() { [ "$(systemctl show -p SubState --value redtether-hub)" = running ]; }
has_ca_key() { [ -s /var/lib/redtether-hub/ca.key ]; }
systemctl start redtether-hub
check "the hub starts" 'wait_for hub_up 30'
check "the hub runs as its own user" '[ "$(stat -c %U /proc/$(systemctl show -p MainPID --value redtether-hub))" = redtether-hub ]'
check "the hub has made its CA key" 'wait_for has_ca_key 30'
check "the agent user, which Node-RED runs as, cannot read the hub CA key" '! runuser -u redtether -- cat /var/lib/redtether-hub/ca.key >/dev/null 2>&1'
systemctl stop redtether-hub
before=$(prop NRestarts)
kill -STOP "$(prop MainPID)"
check "a stopped main process trips the watchdog and is restarted" 'wait_for restarted 40'
check "the watchdog is why" 'journalctl -u redtether | grep -qi "watchdog timeout"'
check "active again after the restart" 'wait_for running 60'
systemctl stop redtether
check "systemctl stop ends with status 0" '[ "$(prop ExecMainStatus)" = 0 ] && [ "$(prop Result)" = success ]'
echo "ExecMainStatus=$(prop ExecMainStatus) Result=$(prop Result)"
check "no Node-RED left after the stop" '! grep -l "^node" /proc/[0-9]*/comm >/dev/null 2>&1'
echo done
systemctl poweroff
EOF
chmod 755 "$ROOT/usr/local/sbin/boot-report"
cat > "$ROOT/etc/systemd/system/boot-report.service" <<'EOF'
[Unit]
Description=redtether boot test report
After=redtether.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/boot-report
[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/boot-report.service "$ROOT/etc/systemd/system/multi-user.target.wants/boot-report.service"
rm -f "$ROOT/root/report"

timeout 900 systemd-nspawn -D "$ROOT" -b --console=pipe --register=no --keep-unit > target/boot-test/boot.log 2>&1 || true
[ -f "$ROOT/root/report" ] || { tail -30 target/boot-test/boot.log; fail "no report (see target/boot-test/boot.log)"; }
cat "$ROOT/root/report"
grep -q '^done$' "$ROOT/root/report" || fail "the report did not finish"
! grep -q '^FAIL' "$ROOT/root/report" || fail "see the report above"
echo "boot test: the package boots under systemd and behaves"
