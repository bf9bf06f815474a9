#!/usr/bin/env bash
# Starts the S3-compatible servers the tests use, on 127.0.0.1, and prints `export` lines
# for their endpoints. Source-able helpers: start_servers / stop_servers.
#   LocalStack (host runtime, S3 + KMS) -> PV_TEST_LOCALSTACK=http://127.0.0.1:$PV_LOCALSTACK_PORT
#   s3s-fs (checks SigV4)      -> PV_TEST_S3S=http://127.0.0.1:$PV_S3S_PORT
set -euo pipefail
TOOLS="${PV_TOOLS:-$HOME/.cache/profile-vault/tools}"
PV_LOCALSTACK_PORT="${PV_LOCALSTACK_PORT:-4566}"
PV_S3S_PORT="${PV_S3S_PORT:-8014}"
RUN_DIR="${PV_TEST_RUN_DIR:-$(mktemp -d /tmp/pv-test-servers.XXXXXX)}"
mkdir -p "$RUN_DIR"

wait_for() { # url seconds
  local url=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

start_servers() {
  mkdir -p "$RUN_DIR/localstack" "$RUN_DIR/s3s"
  GATEWAY_SERVER=hypercorn GATEWAY_LISTEN="127.0.0.1:$PV_LOCALSTACK_PORT" SERVICES=s3,kms EAGER_SERVICE_LOADING=1 \
    DNS_ADDRESS=0 DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 LOCALSTACK_VOLUME_DIR="$RUN_DIR/localstack" \
    setsid "$TOOLS/localstack-venv/bin/python" -m localstack.runtime.main >"$RUN_DIR/localstack.log" 2>&1 &
  echo $! >"$RUN_DIR/localstack.pid"
  setsid "$TOOLS/bin/s3s-fs" --host 127.0.0.1 --port "$PV_S3S_PORT" --access-key test --secret-key testtesttest "$RUN_DIR/s3s" \
    >"$RUN_DIR/s3s.log" 2>&1 &
  echo $! >"$RUN_DIR/s3s.pid"
  wait_for "http://127.0.0.1:$PV_LOCALSTACK_PORT/_localstack/health" 90 || { echo "LocalStack did not start:"; tail -n 30 "$RUN_DIR/localstack.log"; return 1; }
  # s3s-fs answers 403 to an unsigned request once it listens.
  for ((i = 0; i < 100; i++)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PV_S3S_PORT/" || true)
    [ "$code" != "000" ] && break
    sleep 0.1
  done
  [ "$code" != "000" ] || { echo "s3s-fs did not start:"; cat "$RUN_DIR/s3s.log"; return 1; }
  # The LocalStack init hooks (bucket, KMS key), run for real against the server we
  # started, in the order LocalStack runs them; twice, since they must be idempotent.
  # The tests use us-east-1 and LocalStack's test credentials, whatever the caller's are.
  local hook
  run_hook() {
    env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 \
      AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
      AWS="$TOOLS/localstack-venv/bin/aws --endpoint-url http://127.0.0.1:$PV_LOCALSTACK_PORT" bash "$1"
  }
  for hook in "$(dirname "${BASH_SOURCE[0]}")"/../localstack/init/ready.d/*.sh; do
    run_hook "$hook"
    run_hook "$hook" >/dev/null
  done
  export PV_TEST_LOCALSTACK="http://127.0.0.1:$PV_LOCALSTACK_PORT"
  export PV_TEST_S3S="http://127.0.0.1:$PV_S3S_PORT"
}

stop_servers() {
  for name in localstack s3s; do
    [ -f "$RUN_DIR/$name.pid" ] || continue
    pid=$(cat "$RUN_DIR/$name.pid")
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for _ in $(seq 1 100); do
    alive=0
    for name in localstack s3s; do
      [ -f "$RUN_DIR/$name.pid" ] && kill -0 "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null && alive=1
    done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for name in localstack s3s; do
    [ -f "$RUN_DIR/$name.pid" ] && kill -KILL -- "-$(cat "$RUN_DIR/$name.pid")" 2>/dev/null || true
    rm -f "$RUN_DIR/$name.pid"
  done
}
