#!/usr/bin/env bash
# Installs the host .deb on this machine (needs root), checks what it put where and that it works
# as the service user, then removes and purges it, checking what each leaves. Run after
# packaging/build.sh. Exits non-zero at the first thing that is not right.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "install test: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root"
arch=$(dpkg --print-architecture)
deb=$(ls target/packages/redtether_*_"$arch".deb 2>/dev/null | head -1)
[ -n "$deb" ] || fail "no target/packages/redtether_*_$arch.deb (run packaging/build.sh)"
dpkg -P redtether >/dev/null 2>&1 || true

dpkg -i "$deb" >/dev/null
version=$(dpkg-query -W -f='${Version}' redtether)
/usr/bin/redtether --version | grep -q "$version" || fail "redtether --version does not say $version"
/usr/bin/redtether-hub --version >/dev/null || fail "redtether-hub does not run"
getent passwd redtether >/dev/null || fail "no redtether user"
# The hub has its own user, in redtether's group (for /etc/redtether), made from sysusers.d.
[ -f /usr/lib/sysusers.d/redtether.conf ] || fail "no sysusers.d file"
[ "$(id -gn redtether-hub 2>/dev/null)" = redtether ] || fail "no redtether-hub user in group redtether"
[ "$(id -un redtether-hub)" != "$(id -un redtether)" ] || fail "the hub shares the agent's user"
grep -q '^User=redtether-hub$' /lib/systemd/system/redtether-hub.service || fail "the hub unit does not run as redtether-hub"
dpkg-query -W -f='${Conffiles}\n' redtether | grep -q "/etc/redtether/agent.toml" || fail "agent.toml is not a conffile"
[ "$(stat -c '%U:%G %a' /etc/redtether/agent.toml)" = "root:redtether 640" ] || fail "agent.toml: $(stat -c '%U:%G %a' /etc/redtether/agent.toml)"
for unit in redtether redtether-hub; do
    f=/lib/systemd/system/$unit.service
    [ -f "$f" ] || fail "no $f"
    systemd-analyze verify "$f" || fail "$unit.service does not verify"
    score=$(systemd-analyze security --offline=yes "$f" 2>/dev/null | awk '/Overall exposure level/ {print $(NF-2)}')
    python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= 1.5 else 1)" "$score" || fail "$unit.service exposure $score > 1.5"
    echo "$unit.service: verified, exposure $score"
done
[ -L /etc/systemd/system/multi-user.target.wants/redtether.service ] || fail "the agent is not enabled"
[ ! -e /etc/systemd/system/multi-user.target.wants/redtether-hub.service ] || fail "the hub should not be enabled by default"
# The service user can read its configuration and the agent accepts it.
runuser -u redtether -- /usr/bin/redtether check-config --config /etc/redtether/agent.toml >/dev/null || fail "check-config as redtether"
# The man pages come from the clap definitions: every command is there (read without roff's
# escapes and font changes).
page() { zcat "/usr/share/man/man1/$1.1.gz" | sed 's/\\-/-/g; s/\\f[BIR]//g'; }
for cmd in run check-config status restart-node-red passwd "token create" "token list" "token revoke" \
    enroll deploy "audit list" "audit tail" "audit verify" "audit export" sbom; do
    page redtether | grep -E "^$cmd( |\$)" >/dev/null || fail "redtether(1) lacks '$cmd'"
done
for cmd in run ca-fingerprint enroll-token "operator add" "operator list" "operator remove" "operator role" \
    "operator reset-2fa" devices "device revoke" "audit list" "audit verify" "audit export"; do
    page redtether-hub | grep -E "^$cmd( |\$)" >/dev/null || fail "redtether-hub(1) lacks '$cmd'"
done
[ -f /usr/share/doc/redtether/examples/devices.conf ] || fail "no devices.conf example"
[ -f /usr/lib/systemd/system-preset/80-redtether.preset ] || fail "no preset"

# State the service would have made, to see what removal keeps.
mkdir -p /var/lib/redtether && touch /var/lib/redtether/marker
dpkg -r redtether >/dev/null
[ ! -e /usr/bin/redtether ] || fail "remove left the binary"
[ -f /etc/redtether/agent.toml ] || fail "remove took the conffile"
[ -f /var/lib/redtether/marker ] || fail "remove took the state"
[ ! -e /etc/systemd/system/multi-user.target.wants/redtether.service ] || fail "remove left the agent enabled"
dpkg -P redtether >/dev/null
[ ! -e /etc/redtether/agent.toml ] || fail "purge left the conffile"
[ ! -e /var/lib/redtether ] || fail "purge left the state"
echo "install test: $deb installs, works as redtether, removes and purges cleanly"
