#!/usr/bin/env bash
# Builds the .deb and .rpm: target/packages/redtether_<version>_<arch>.deb and
# target/packages/redtether-<version>-1.<arch>.rpm, for the host or for TARGET. The binaries
# come from cross/build.sh TARGET (glibc 2.28, stripped, checked, smoke-run), which this runs.
#
#   packaging/build.sh                               # the host (x86_64-unknown-linux-gnu here)
#   packaging/build.sh aarch64-unknown-linux-gnu     # arm64; armv7-unknown-linux-gnueabihf: armhf
#
# Installs cargo-deb and cargo-generate-rpm (pinned) if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${1:-$(rustc -vV | sed -n 's/^host: //p')}

command -v cargo-deb >/dev/null || cargo install --locked cargo-deb@3.8.0
command -v cargo-generate-rpm >/dev/null || cargo install --locked cargo-generate-rpm@0.21.1

mkdir -p target/man target/packages
# The man pages, from the binaries' clap definitions (so they list every command), on the host.
cargo run --quiet --locked -p redtether --example man -- target/man
cargo run --quiet --locked -p redtether-hub --example man -- target/man
for page in redtether redtether-hub; do
    gzip -9n -c "target/man/$page.1" > "target/man/$page.1.gz"
done

cross/build.sh "$TARGET"
cargo deb --no-build --no-strip --target "$TARGET" --output target/packages/
# RPM names 32-bit hard-float ARM armv7hl (Fedora, openSUSE); cargo-generate-rpm would say armv7.
rpm_arch=()
case "$TARGET" in
    armv7-*gnueabihf) rpm_arch=(--arch armv7hl) ;;
esac
cargo generate-rpm --target "$TARGET" "${rpm_arch[@]}" --output target/packages/
ls -l target/packages/
