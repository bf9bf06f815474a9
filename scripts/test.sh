#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need (Chromium, LocalStack,
# s3s-fs), starts the S3 servers on 127.0.0.1, runs every test, stops the servers.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps
source scripts/test-servers.sh
trap stop_servers EXIT
start_servers
echo "S3 servers: LocalStack $PV_TEST_LOCALSTACK, s3s-fs $PV_TEST_S3S"
export PV_TEST_NODE_DIR="${PV_TOOLS:-$HOME/.cache/profile-vault/tools}/node"
export PV_TEST_SCHEMATHESIS="${PV_TOOLS:-$HOME/.cache/profile-vault/tools}/schemathesis-venv/bin/st"
cargo test --all-targets "$@"
