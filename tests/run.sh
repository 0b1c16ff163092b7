#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine with Rust, Node.js 20 and npm.
#
# What the tests need beyond that is installed by the tests themselves, once, into target/:
# Node-RED from tests/fixtures/node-red/package-lock.json (npm ci, reused while the lockfile is
# unchanged), the CycloneDX validator the SBOM test runs from tests/fixtures/cyclonedx/package-lock.json
# (the same way), the OpenID provider of the hub's single sign-on tests (panva's oidc-provider)
# from tests/fixtures/oidc-provider/package-lock.json (the same way) and Python's aioquic from
# tests/fixtures/aioquic/requirements.txt (pip --target); the proxy tests install Debian's
# tinyproxy-bin, the hub's LDAP tests Debian's slapd and ldap-utils, and the hub's browser tests
# Debian's chromium and chromium-driver (headless Chromium over WebDriver; their screenshots go to
# target/console/), with apt-get (as root) when they are missing (a slapd service the package
# starts is stopped and disabled again); the network-namespace tests (as root: `ip netns`) install
# Debian's nftables, the metrics tests Debian's prometheus for its `promtool check metrics`
# (the Prometheus service the package starts is stopped and disabled again), and the hub's
# PostgreSQL store and cluster tests Debian's postgresql (each test makes a cluster of its own
# with initdb in a temporary folder and runs it with pg_ctl on a loopback port, as the postgres
# user; the cluster the package starts is stopped and disabled again).
# Every crate of the workspace is tested; the integration tests in tests/ run the agent and hub
# binaries cargo builds for them. Extra arguments go to `cargo test` (for example a test name
# filter).
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "tests/run.sh: $1 is required ($2)" >&2; exit 1; }
}
need cargo "install Rust with rustup"
need node "Node.js 20 runs Node-RED"
need npm "npm installs the Node-RED fixture"
need unshare "util-linux: the journald test runs the agent in a private mount namespace"
need python3 "the journald test's stand-in journal and the aioquic client"
if ! python3 -m pip --version >/dev/null 2>&1; then
    # Debian ships pip separately; as root we add it, otherwise say what is missing.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
    else
        echo "tests/run.sh: python3 -m pip is required (it installs the aioquic client): apt-get install python3-pip" >&2
        exit 1
    fi
fi

exec cargo test --workspace --locked "$@"
