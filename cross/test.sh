#!/usr/bin/env bash
# Runs the library's unit tests for an ARM target under qemu-user: the decision logic, codecs,
# sled store, TLS and signing code as they behave on the device's architecture (32-bit armv7
# included), not only on the build machine. Not in .ci/run (a debug build per target takes
# minutes); run it before a release.
#
#   cross/test.sh aarch64-unknown-linux-gnu
#   cross/test.sh armv7-unknown-linux-gnueabihf
#
# Extra arguments go to the test binary (a name filter, --test-threads=1, ...). Needs what
# cross/build.sh installs; run that once first on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${1:?usage: cross/test.sh aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf [test args]}
shift
case "$TARGET" in
    aarch64-unknown-linux-gnu) gnu=aarch64-linux-gnu; qemu=qemu-aarch64-static ;;
    armv7-unknown-linux-gnueabihf) gnu=arm-linux-gnueabihf; qemu=qemu-arm-static ;;
    *) echo "cross/test.sh: unknown target $TARGET" >&2; exit 2 ;;
esac
command -v "$qemu" >/dev/null && [ -d "/usr/$gnu/lib" ] || {
    echo "cross/test.sh: $qemu or /usr/$gnu missing: run cross/build.sh $TARGET once" >&2
    exit 1
}
# Cargo runs each test binary through the runner: qemu with the cross libc as the loader's root.
runner_var="CARGO_TARGET_$(echo "$TARGET" | tr 'a-z-' 'A-Z_')_RUNNER"
export "$runner_var=$qemu -L /usr/$gnu"
exec cargo-zigbuild test --locked --lib --target "$TARGET.2.28" -- "$@"
