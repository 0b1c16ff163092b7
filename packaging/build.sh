#!/usr/bin/env bash
# Builds the .deb and .rpm: target/packages/redtether_<version>_<arch>.deb and
# target/packages/redtether-<version>-1.<arch>.rpm, for the host or for TARGET (whose binaries
# cross/build.sh TARGET makes first).
#
#   packaging/build.sh                               # the host
#   packaging/build.sh aarch64-unknown-linux-gnu     # after cross/build.sh aarch64-unknown-linux-gnu
#
# Installs cargo-deb and cargo-generate-rpm (pinned) if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${1:-}

command -v cargo-deb >/dev/null || cargo install --locked cargo-deb@3.8.0
command -v cargo-generate-rpm >/dev/null || cargo install --locked cargo-generate-rpm@0.21.1

mkdir -p target/man target/packages
for page in redtether redtether-hub; do
    gzip -9n -c "packaging/man/$page.1" > "target/man/$page.1.gz"
done

if [ -z "$TARGET" ]; then
    cargo build --release --locked
    strip target/release/redtether target/release/redtether-hub
    cargo deb --no-build --no-strip --output target/packages/
    cargo generate-rpm --output target/packages/
else
    # cross/build.sh left stripped binaries in target/$TARGET/release.
    for bin in redtether redtether-hub; do
        [ -x "target/$TARGET/release/$bin" ] || { echo "packaging/build.sh: run cross/build.sh $TARGET first" >&2; exit 1; }
    done
    cargo deb --no-build --no-strip --target "$TARGET" --output target/packages/
    cargo generate-rpm --target "$TARGET" --output target/packages/
fi
ls -l target/packages/
