#!/usr/bin/env bash
# Release binaries for ARM devices on a plain Debian 12 machine, no Docker:
# target/<TARGET>/release/redtether and redtether-hub, linked against glibc 2.28 (so they run on
# Raspberry Pi OS bullseye, Debian buster/bullseye, Ubuntu 20.04 and newer), stripped, checked
# for their highest GLIBC_ symbol version, and run once under qemu-user.
#
#   cross/build.sh aarch64-unknown-linux-gnu        # 64-bit Pi OS, most gateways
#   cross/build.sh armv7-unknown-linux-gnueabihf    # 32-bit Pi OS on Pi 2/3/4/5
#   cross/build.sh x86_64-unknown-linux-gnu         # x86 gateways (run natively, no qemu)
#   packaging/build.sh <TARGET>                     # the packages (it runs this script first)
#
# Installs what it needs if missing: the rustup target, cargo-zigbuild (pinned) with zig from
# PyPI (ziglang), the cross binutils (strip, objdump), qemu-user-static and the target's libc
# (for qemu's -L). Docker users can use `cross` with cross/Cross.toml instead.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${1:?usage: cross/build.sh aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf|x86_64-unknown-linux-gnu}
GLIBC=2.28
case "$TARGET" in
    aarch64-unknown-linux-gnu) gnu=aarch64-linux-gnu; qemu=qemu-aarch64-static; deb_arch=arm64 ;;
    armv7-unknown-linux-gnueabihf) gnu=arm-linux-gnueabihf; qemu=qemu-arm-static; deb_arch=armhf ;;
    x86_64-unknown-linux-gnu) gnu=x86_64-linux-gnu; qemu=""; deb_arch=amd64 ;;
    *) echo "cross/build.sh: unknown target $TARGET" >&2; exit 2 ;;
esac

rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
python3 -c 'import ziglang' 2>/dev/null || python3 -m pip install --quiet ziglang==0.17.1
command -v cargo-zigbuild >/dev/null || cargo install --locked cargo-zigbuild@0.24.1
if [ -n "$qemu" ] && { ! command -v "$gnu-strip" >/dev/null || ! command -v "$qemu" >/dev/null || [ ! -d "/usr/$gnu/lib" ]; }; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "binutils-$gnu" qemu-user-static "libc6-$deb_arch-cross" >/dev/null
fi

# qemu-user with the cross libc as the loader's root (no multiarch libc6:$deb_arch here); the
# host's own architecture runs directly.
exe() { if [ -n "$qemu" ]; then "$qemu" -L "/usr/$gnu" "$@"; else "$@"; fi; }

cargo zigbuild --release --locked --target "$TARGET.$GLIBC"
out=target/$TARGET/release
for bin in redtether redtether-hub; do
    "$gnu-strip" "$out/$bin"
    needed=$("$gnu-objdump" -T "$out/$bin" | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1)
    echo "$out/$bin: $(stat -c %s "$out/$bin") bytes stripped, needs $needed"
    python3 -c "import sys; v=tuple(map(int, sys.argv[1].split('_')[1].split('.'))); sys.exit(0 if v <= (2, 28) else 1)" "$needed" \
        || { echo "cross/build.sh: $bin needs $needed, newer than glibc $GLIBC" >&2; exit 1; }
    exe "$out/$bin" --version
done

# A smoke run of the agent under qemu: its configuration check, then the daemon itself with a
# placeholder for Node-RED (no Node.js for $deb_arch here), its status, and SIGTERM → exit 0.
run() { exe "$out/redtether" "$@"; }
work=$(mktemp -d)
trap 'kill "${agent:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/agent.toml" <<CONF
state_dir = "$work/state"
[node_red]
command = ["sh", "-c", "exec sleep 100000", "placeholder"]
startup_timeout = "1h"
[gate]
listen = "127.0.0.1:0"
CONF
run check-config --config "$work/agent.toml"
# (Started directly, not through a shell function: SIGTERM must reach the agent.)
if [ -n "$qemu" ]; then
    "$qemu" -L "/usr/$gnu" "$out/redtether" run --config "$work/agent.toml" 2>"$work/agent.log" &
else
    "$out/redtether" run --config "$work/agent.toml" 2>"$work/agent.log" &
fi
agent=$!
for _ in $(seq 1 100); do run status --config "$work/agent.toml" >/dev/null 2>&1 && break; sleep 0.2; done
run status --config "$work/agent.toml"
kill -TERM "$agent"
wait "$agent" && echo "$TARGET: the agent ran${qemu:+ under $qemu} and stopped cleanly on SIGTERM" \
    || { cat "$work/agent.log"; echo "cross/build.sh: the agent did not stop cleanly" >&2; exit 1; }
