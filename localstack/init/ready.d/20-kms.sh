#!/usr/bin/env bash
# LocalStack ready hook: creates the symmetric KMS key profile-vault wraps data keys with,
# under the alias $PV_KMS_ALIAS (default alias/profile-vault). Idempotent: an existing alias
# is left as it is, so the key (and every profile wrapped by it) survives re-runs; one that
# names a key that is not enabled is an error, not "exists".
# In the LocalStack container `awslocal` is on PATH; on a host, set AWS (e.g. "aws
# --endpoint-url http://127.0.0.1:4566") and this script uses it instead.
set -euo pipefail
ALIAS="${PV_KMS_ALIAS:-alias/profile-vault}"
AWS_CMD="${AWS:-awslocal}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"

case "$ALIAS" in alias/*) ;; *) echo "PV_KMS_ALIAS must start with alias/: $ALIAS" >&2; exit 2 ;; esac

# Prints "ARN STATE" of the alias's key; returns 1 when the alias does not exist and 2 on
# any other failure (KMS not up, access denied), with its message on stderr.
describe() {
  local out
  if out=$($AWS_CMD kms describe-key --key-id "$ALIAS" --query 'KeyMetadata.[Arn,KeyState]' --output text 2>&1); then
    echo "$out"
  elif grep -q NotFoundException <<<"$out"; then
    return 1
  else
    echo "describe-key $ALIAS failed: $out" >&2
    return 2
  fi
}

rc=0
found=$(describe) || rc=$?
[ "$rc" -le 1 ] || exit 1
if [ "$rc" = 0 ]; then
  read -r key state <<<"$found"
  if [ "$state" != "Enabled" ]; then
    echo "KMS key $ALIAS ($key) is $state, not Enabled: enable it or point the alias at a usable key" >&2
    exit 1
  fi
  echo "KMS key $ALIAS exists: $key"
  exit 0
fi

key=$($AWS_CMD kms create-key --description "profile-vault master key" \
  --key-usage ENCRYPT_DECRYPT --key-spec SYMMETRIC_DEFAULT \
  --tags TagKey=app,TagValue=profile-vault --query KeyMetadata.Arn --output text)
if err=$($AWS_CMD kms create-alias --alias-name "$ALIAS" --target-key-id "$key" 2>&1); then
  echo "KMS key $ALIAS created: $key"
elif grep -q AlreadyExistsException <<<"$err"; then
  # Another run of this hook won the race: use its key and retire ours.
  $AWS_CMD kms schedule-key-deletion --key-id "$key" --pending-window-in-days 7 >/dev/null || true
  found=$(describe) || exit 1
  read -r key _ <<<"$found"
  echo "KMS key $ALIAS exists (created concurrently): $key"
else
  echo "create-alias $ALIAS failed: $err" >&2
  exit 1
fi
