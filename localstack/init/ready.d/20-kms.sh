#!/usr/bin/env bash
# LocalStack ready hook: creates the symmetric KMS key profile-vault wraps data keys with,
# under the alias $PV_KMS_ALIAS (default alias/profile-vault). Idempotent: an existing alias
# is left as it is, so the key (and every profile wrapped by it) survives re-runs.
# In the LocalStack container `awslocal` is on PATH; on a host, set AWS (e.g. "aws
# --endpoint-url http://127.0.0.1:4566") and this script uses it instead.
set -euo pipefail
ALIAS="${PV_KMS_ALIAS:-alias/profile-vault}"
AWS_CMD="${AWS:-awslocal}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"

case "$ALIAS" in alias/*) ;; *) echo "PV_KMS_ALIAS must start with alias/: $ALIAS" >&2; exit 2 ;; esac

if key=$($AWS_CMD kms describe-key --key-id "$ALIAS" --query KeyMetadata.Arn --output text 2>/dev/null); then
  echo "KMS key $ALIAS exists: $key"
else
  key=$($AWS_CMD kms create-key --description "profile-vault master key" \
    --key-usage ENCRYPT_DECRYPT --key-spec SYMMETRIC_DEFAULT \
    --tags TagKey=app,TagValue=profile-vault --query KeyMetadata.Arn --output text)
  # Two hooks racing: the loser's create-alias fails; the alias then names the winner's key.
  if ! $AWS_CMD kms create-alias --alias-name "$ALIAS" --target-key-id "$key" 2>/dev/null; then
    $AWS_CMD kms schedule-key-deletion --key-id "$key" --pending-window-in-days 7 >/dev/null || true
    key=$($AWS_CMD kms describe-key --key-id "$ALIAS" --query KeyMetadata.Arn --output text)
  fi
  echo "KMS key $ALIAS created: $key"
fi
