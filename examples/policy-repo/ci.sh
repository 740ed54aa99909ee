#!/bin/sh
# CI for a policy repository: run on every pull request.
#
#   BASE_POLICIES=DIR  the policies in force (the target branch's checkout);
#                      without it, the target branch is read from git
#                      (BASE_REF, default origin/main)
#   BERTH=PATH         the berth binary (default: berth on PATH)
#   ALLOW_LOSS=1       accept a reviewed loss of access
#
# Fails when a policy test fails, lint finds something, the candidate does not
# load, or any replayed request would lose access.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
berth=${BERTH:-berth}
candidate="$here/policies"

if [ -z "${BASE_POLICIES:-}" ]; then
    BASE_POLICIES=$(mktemp -d)
    trap 'rm -rf "$BASE_POLICIES"' EXIT
    top=$(git -C "$here" rev-parse --show-toplevel)
    prefix=$(git -C "$here" rev-parse --show-prefix)
    git -C "$top" archive --format=tar "${BASE_REF:-origin/main}:${prefix}policies" >"$BASE_POLICIES/base.tar"
    tar -x -f "$BASE_POLICIES/base.tar" -C "$BASE_POLICIES"
    rm "$BASE_POLICIES/base.tar"
fi

echo "== policy tests"
"$berth" policy test --policies "$candidate"

echo "== lint"
"$berth" policy lint --policies "$candidate"

echo "== what the change does to known traffic"
allow=""
if [ "${ALLOW_LOSS:-}" = 1 ]; then
    allow="--allow-loss"
fi
# Replays the day's traffic and every test case under the policy in force and
# the candidate; exits non-zero on any loss.
"$berth" policy diff --live "$BASE_POLICIES" --policies "$candidate" \
    --cases "$here/traffic" $allow
"$berth" policy diff --live "$BASE_POLICIES" --policies "$candidate" \
    --cases "$candidate/tests" $allow
