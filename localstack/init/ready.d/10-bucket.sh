#!/usr/bin/env bash
# LocalStack ready hook: creates the profile bucket (idempotent) with a lifecycle rule that
# aborts multipart uploads left incomplete by a crashed save after 1 day.
# In the LocalStack container `awslocal` is on PATH; on a host, set AWS (e.g. "aws
# --endpoint-url http://127.0.0.1:4566") and this script uses it instead.
set -euo pipefail
BUCKET="${PV_BUCKET:-profile-vault}"
AWS_CMD="${AWS:-awslocal}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"

if $AWS_CMD s3api head-bucket --bucket "$BUCKET" >/dev/null 2>&1; then
  echo "bucket $BUCKET exists"
else
  $AWS_CMD s3api create-bucket --bucket "$BUCKET" >/dev/null
  echo "bucket $BUCKET created"
fi

$AWS_CMD s3api put-bucket-lifecycle-configuration --bucket "$BUCKET" --lifecycle-configuration '{
  "Rules": [{
    "ID": "abort-incomplete-multipart",
    "Status": "Enabled",
    "Filter": {"Prefix": ""},
    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}
  }]
}' >/dev/null
echo "lifecycle rule on $BUCKET: abort incomplete multipart uploads after 1 day"
