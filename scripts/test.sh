#!/usr/bin/env bash
# berth's full check: formatting, lints, build, unit + integration + end-to-end
# tests against a real docker-registry, docker, podman and skopeo.
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$SECONDS

# One build directory per machine, outside the checkout, so that a fresh clone
# on a machine that built berth before reuses the compiled dependencies (only
# berth itself is compiled again). Without it, everything is built from scratch.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/berth/target}"
step() {
  printf '\n==> [%4ds] %s\n' "$((SECONDS - start))" "$*"
}

step "install test dependencies"
scripts/install-test-deps.sh

step "start PostgreSQL (store suite, replica and fault tests)"
BERTH_TEST_POSTGRES_URL=$(scripts/start-postgres.sh)
export BERTH_TEST_POSTGRES_URL

step "Keycloak for the federation tests (scripts/install-keycloak.sh)"
kc_env=$(scripts/install-keycloak.sh)
BERTH_KEYCLOAK_HOME=$(sed -n 's/^BERTH_KEYCLOAK_HOME=//p' <<<"$kc_env")
BERTH_KEYCLOAK_JAVA_HOME=$(sed -n 's/^BERTH_KEYCLOAK_JAVA_HOME=//p' <<<"$kc_env")
export BERTH_KEYCLOAK_HOME BERTH_KEYCLOAK_JAVA_HOME

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo build"
cargo build --all-targets

step "cargo test (unit, integration, end-to-end; BERTH_E2E=require)"
# A missing external tool fails the end-to-end tests instead of skipping them.
# The compatibility cells append to this file; start from an empty one.
rm -f target/compat-results.jsonl
results=$(mktemp)
trap 'rm -f "$results"' EXIT
BERTH_E2E=require RUST_BACKTRACE=1 cargo test --all-targets 2>&1 | tee "$results"

step "docs/compatibility.md table matches this run (scripts/compat-table.py)"
python3 scripts/compat-table.py --check docs/compatibility.md

step "policy tests and lint: policies/ and examples/policies/*/"
# The shipped policy's own tests (policies/tests/*.toml), then every example's
# tests and lint; any failing case or finding fails the run.
cargo run --quiet -- policy test --policies policies
cargo run --quiet -- policy lint --policies policies
for dir in examples/policies/*/ examples/keycloak/policies/ examples/ldap/policies/; do
  echo "-- ${dir}"
  cargo run --quiet -- policy test --policies "${dir}"
  cargo run --quiet -- policy lint --policies "${dir}"
done

step "cargo test --doc"
cargo test --doc 2>&1 | tee -a "$results"

step "all checks passed"
# One closing line for every test binary above.
awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i + 1) ~ /^passed/) p += $i; if ($(i + 1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
