#!/usr/bin/env bash
# berth load test: drives /token with N concurrent connections and reports
# tokens/s, p50/p99 latency, errors and peak RSS, next to the machine's own
# single-core signing rates (openssl speed) measured in the same run.
#
#   scripts/load.sh [-c CONNECTIONS] [-d SECONDS]
#
#   -c  concurrent connections per scenario (default 8)
#   -d  seconds per scenario (default 10)
#
# Scenarios (each: wrk -t2 -c$C -d${D}s --latency, after one curl sanity request
# that must return 200 with a token). "reuse" is token_reuse at its default (30 s),
# "no reuse" is token_reuse = 0; "distinct" asks a new scope on every request, so
# no token can be reused; "mix" alternates a repeated and a distinct request.
#   basic-es256           GET /token, warm Basic auth (credential cache hit), reuse
#   basic-es256-noreuse   the same, reuse off
#   distinct-es256        warm Basic, distinct scopes
#   refresh-es256         POST /token grant_type=refresh_token, reuse
#   anon-es256            GET /token without credentials
#   c1000-es256           basic-es256 over 1,000 keep-alive connections
#   basic-rs256           as basic-es256 on a server whose only key is RSA-2048
#   basic-rs256-noreuse   the same, reuse off
#   distinct-rs256        distinct scopes, RSA-2048
#   mix-rs256             repeated and distinct requests alternating, RSA-2048
#   basic-pg, refresh-pg  warm Basic and refresh grant on PostgreSQL (needs
#                         scripts/start-postgres.sh; LOAD_POSTGRES=0 skips)
#   soak-es256            basic-es256 over 200 connections for LOAD_SOAK seconds
#                         (only when LOAD_SOAK is set, 1..600; e.g. LOAD_SOAK=60)
# Memory: idle RSS after start and after 100 password logins with
# credential_cache_ttl = 0 (one server), peak RSS (VmHWM) per server, and the
# peak of the 1,000 connections alone (VmHWM reset just before them through
# /proc/PID/clear_refs). The soak samples VmRSS every second and reports it
# before the load, first/min/max/last from the 5th second on (the spread is
# the flatness figure), and 3 s after; and its audit bytes per request.
# Audit: database growth (SQLite file + WAL, PostgreSQL pg_database_size)
# divided by the requests of the scenarios run on that server.
#
# The server runs with RUST_LOG=warn so the per-request decision log line
# (target berth::decision, level info) is not part of the measurement; set
# LOAD_RUST_LOG=info to measure with it. LOAD_BIN=PATH runs that berth binary
# instead of building one (to compare two builds in otherwise equal runs).
# Each repeated-request scenario first runs LOAD_WARMUP seconds (default 3,
# 0..60) of the same load unmeasured: a fresh server's first seconds run well
# below its steady rate.
# The summary is printed and written to target/load-report.txt. Everything listens on 127.0.0.1 only; every loop is
# bounded; servers, the temp dir and the PostgreSQL database are removed on
# exit, also on failure.
#
# Targets (benchmark goals, not assertions; the script exits 0 when they miss):
#   basic-es256 >= 0.5 x single-core ES256 sign/s (openssl speed ecdsap256)
#   refresh-es256, basic-pg, refresh-pg >= 0.4 x single-core ES256 sign/s
#   basic-rs256 >= 10 x single-core RSA-2048 sign/s (openssl speed rsa2048)
#   c1000: no errors, peak RSS <= 64 MiB; idle RSS <= 20 MiB
#   soak: RSS spread <= 5 MiB
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

CONNS=8
DURATION=10
usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}
while getopts ":c:d:h" opt; do
  case $opt in
    c) CONNS=$OPTARG ;;
    d) DURATION=$OPTARG ;;
    h) usage; exit 0 ;;
    :) echo "load.sh: -$OPTARG needs a value" >&2; exit 2 ;;
    *) echo "load.sh: unknown option -$OPTARG" >&2; usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -eq 0 ]] || { echo "load.sh: unexpected argument: $1" >&2; exit 2; }
[[ $CONNS =~ ^[1-9][0-9]*$ && $CONNS -le 10000 ]] || { echo "load.sh: -c must be 1..10000" >&2; exit 2; }
[[ $DURATION =~ ^[1-9][0-9]*$ && $DURATION -le 600 ]] || { echo "load.sh: -d must be 1..600 seconds" >&2; exit 2; }
SOAK=${LOAD_SOAK:-0}
[[ $SOAK =~ ^[0-9]+$ && $SOAK -le 600 ]] || { echo "load.sh: LOAD_SOAK must be 0..600 seconds" >&2; exit 2; }
THREADS=2
((CONNS < THREADS)) && THREADS=$CONNS
SERVER_LOG_LEVEL=${LOAD_RUST_LOG:-warn}
WARMUP=${LOAD_WARMUP:-3}
[[ $WARMUP =~ ^[0-9]+$ && $WARMUP -le 60 ]] || { echo "load.sh: LOAD_WARMUP must be 0..60 seconds" >&2; exit 2; }

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'load.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools
command -v openssl >/dev/null || die "openssl is required (Debian package openssl)"
command -v curl >/dev/null || die "curl is required (Debian package curl)"
if ! command -v wrk >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing wrk (apt-get install -y wrk)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null ||
      { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null; } ||
      die "could not install wrk with apt-get"
  fi
  command -v wrk >/dev/null ||
    die "wrk is required: install it (Debian/Ubuntu: sudo apt-get install wrk) and run again"
fi

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ -n ${LOAD_BIN:-} ]]; then
  # A binary built before (e.g. to compare two builds); no cargo build.
  BIN=$(readlink -f "$LOAD_BIN")
  log "using $BIN (LOAD_BIN), no cargo build"
else
  log "cargo build --release"
  cargo build --release
  BIN=$TARGET_DIR/release/berth
fi
[[ -x $BIN ]] || die "no binary at $BIN after cargo build --release"

# ---------------------------------------------------------------- temp dir, cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-load.XXXXXX")
SERVER_PID=
SAMPLER_PID=
PG_ADMIN=
PG_DB=
cleanup() {
  local rc=$?
  if [[ -n $SAMPLER_PID ]]; then
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
  fi
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ -n $PG_DB ]]; then
    psql "$PG_ADMIN" -qAtc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A child that exited stays a zombie until waited for; kill -0 still succeeds then.
alive() { [[ -r /proc/$1/status ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }

free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    return
  fi
  local p i
  for i in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port found"
}

PORT=$(free_port)
BASE=http://127.0.0.1:$PORT
ADMIN_PW=load-admin-$RANDOM$RANDOM
ALICE_PW=load-alice-$RANDOM$RANDOM
KEYS_DIR=$TMP/keys

# The load test's environment for berth (BERTH_CONFIG and RUST_LOG of the
# caller are not inherited). The config file only lifts the per-address
# connection cap (every wrk connection comes from 127.0.0.1); DATABASE and
# EXTRA_ENV (e.g. BERTH_TOKEN_REUSE=0) vary per server.
DATABASE=$TMP/berth.db
EXTRA_ENV=()
printf 'max_connections = 4096\nmax_connections_per_address = 2048\n' >"$TMP/berth.toml"
berth_env() {
  BERTH_ENV=(env -u BERTH_CONFIG
    BERTH_CONFIG="$TMP/berth.toml"
    BERTH_LISTEN="127.0.0.1:$PORT"
    BERTH_PUBLIC_URL="$BASE"
    BERTH_DATABASE="$DATABASE"
    BERTH_KEYS_DIR="$KEYS_DIR"
    BERTH_POLICIES_DIR="$ROOT/policies"
    BERTH_ADMIN_PASSWORD="$ADMIN_PW"
    RUST_LOG="$SERVER_LOG_LEVEL"
    "${EXTRA_ENV[@]}")
}
berth() {
  berth_env
  "${BERTH_ENV[@]}" "$BIN" "$@"
}

# start_server NAME: on a fresh port, with DATABASE, KEYS_DIR and EXTRA_ENV.
start_server() {
  local name=$1
  PORT=$(free_port)
  BASE=http://127.0.0.1:$PORT
  SERVER_LOG=$TMP/server-$name.log
  berth_env
  # A simple command (env execs berth), not a function, so $! is berth's pid.
  "${BERTH_ENV[@]}" "$BIN" serve >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  local i
  for i in $(seq 1 150); do
    if curl -fsS --max-time 1 "$BASE/healthz" >/dev/null 2>&1; then
      [[ $(readlink "/proc/$SERVER_PID/exe" 2>/dev/null) == "$(readlink -f "$BIN")"* ]] ||
        die "pid $SERVER_PID is not $BIN"
      log "berth ($name) up on $BASE, pid $SERVER_PID"
      return
    fi
    if ! alive "$SERVER_PID"; then
      cat "$SERVER_LOG" >&2
      die "berth serve exited during start"
    fi
    sleep 0.2
  done
  cat "$SERVER_LOG" >&2
  die "berth did not answer $BASE/healthz within 30 s"
}

rss_kib() { awk -v k="${2:-VmRSS}:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# Stops the server; its peak RSS in KiB (VmHWM) is left in LAST_RSS.
stop_server() {
  LAST_RSS=$(rss_kib "$SERVER_PID" VmHWM)
  LAST_RSS=${LAST_RSS:-0}
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

BASIC=$(printf '%s' "alice:$ALICE_PW" | base64 -w0)
SCOPE_PUSH='repository%3Aalice%2Fapp%3Apull%2Cpush'
SCOPE_PULL='repository%3Aalice%2Fapp%3Apull'
BASIC_PATH="/token?service=registry&scope=$SCOPE_PUSH"
ANON_PATH="/token?service=registry&scope=$SCOPE_PULL"

# sanity NAME CURL_ARGS... : one request must return 200 with a token.
sanity() {
  local name=$1 out code
  shift
  out=$(curl -sS --max-time 10 -o "$TMP/sanity.json" -w '%{http_code}' "$@") || die "$name: sanity request failed"
  code=$out
  if [[ $code != 200 ]] || ! grep -q '"token":"' "$TMP/sanity.json"; then
    echo "response ($code): $(head -c 500 "$TMP/sanity.json")" >&2
    die "$name: sanity request did not return 200 with a token"
  fi
}

declare -A R_TPS R_P50 R_P99 R_ERR R_REQ R_CONNS R_BASE
SCENARIOS=()
# scenario NAME BASE(ES256|RSA) PATH [wrk args...]; LOAD_METHOD / LOAD_BODY /
# LOAD_MODE / LOAD_CONNS / LOAD_SECONDS in the environment.
scenario() {
  local name=$1 base=$2 path=$3 out line conns=${LOAD_CONNS:-$CONNS} secs=${LOAD_SECONDS:-$DURATION}
  shift 3
  log "scenario $name: wrk -t$THREADS -c$conns -d${secs}s --latency $BASE$path (${LOAD_MODE:-same})"
  # Warm-up: a fresh server's first seconds run well below its steady rate
  # (measured: a third lower), so repeated-request scenarios are measured
  # after WARMUP seconds of the same load, whose requests count toward the
  # audit figures but not the rate. Distinct and mixed scenarios and the soak
  # are not warmed: their first requests are part of what they measure.
  if [[ -z ${LOAD_MODE:-} && -z ${LOAD_SECONDS:-} ]] && ((WARMUP > 0)); then
    local warm
    warm=$(timeout $((WARMUP + 60)) wrk -t"$THREADS" -c"$conns" -d"${WARMUP}s" --timeout 10s \
      -s "$ROOT/scripts/load/token.lua" "$@" "$BASE$path") || die "$name: warm-up wrk failed: $warm"
    warm=$(printf '%s\n' "$warm" | sed -n 's/^LOAD_RESULT.* requests=\([0-9]*\).*/\1/p')
    SERVER_REQUESTS=$((SERVER_REQUESTS + ${warm:-0}))
  fi
  out=$(timeout $((secs + 60)) wrk -t"$THREADS" -c"$conns" -d"${secs}s" --timeout 10s --latency \
    -s "$ROOT/scripts/load/token.lua" "$@" "$BASE$path") || die "$name: wrk failed: $out"
  printf '%s\n' "$out" | sed -n '/^Running/,/^LOAD_RESULT/p' | grep -v '^LOAD_RESULT' | sed 's/^/    /' >&2
  line=$(printf '%s\n' "$out" | grep '^LOAD_RESULT') || die "$name: no LOAD_RESULT from wrk"
  local requests duration_us p50_us p99_us status_errors socket_errors kv
  for kv in ${line#LOAD_RESULT }; do
    case ${kv%%=*} in
      requests) requests=${kv#*=} ;;
      duration_us) duration_us=${kv#*=} ;;
      p50_us) p50_us=${kv#*=} ;;
      p99_us) p99_us=${kv#*=} ;;
      status_errors) status_errors=${kv#*=} ;;
      socket_errors) socket_errors=${kv#*=} ;;
    esac
  done
  SCENARIOS+=("$name")
  R_BASE[$name]=$base
  R_CONNS[$name]=$conns
  R_REQ[$name]=$requests
  SERVER_REQUESTS=$((SERVER_REQUESTS + requests))
  R_ERR[$name]=$((status_errors + socket_errors))
  R_TPS[$name]=$(awk -v n="$requests" -v e="$status_errors" -v us="$duration_us" 'BEGIN { printf "%.0f", (n - e) / (us / 1e6) }')
  R_P50[$name]=$(awk -v us="$p50_us" 'BEGIN { printf "%.2f", us / 1000 }')
  R_P99[$name]=$(awk -v us="$p99_us" 'BEGIN { printf "%.2f", us / 1000 }')
}

# openssl_sign_rate ALG: single-core sign/s from `openssl speed`.
openssl_sign_rate() {
  local out
  out=$(timeout 120 openssl speed -seconds 3 -elapsed "$1" 2>/dev/null) || die "openssl speed $1 failed"
  # The header line names the columns (…sign/s…); the data line has the same
  # columns after a label of several words.
  printf '%s\n' "$out" | awk '
    / sign\/s / { for (i = 1; i <= NF; i++) if ($i == "sign/s") col = i; ncols = NF; next }
    col && NF > ncols { print $(NF - ncols + col); exit }'
}

# Bytes the audit trail takes: the SQLite file and its WAL, or the PostgreSQL
# database.
db_bytes() {
  if [[ $DATABASE == postgres://* ]]; then
    psql "$DATABASE" -qAtc 'SELECT pg_database_size(current_database())' 2>/dev/null || echo 0
  else
    local total=0 f
    for f in "$DATABASE" "$DATABASE-wal"; do
      [[ -f $f ]] && total=$((total + $(stat -c %s "$f")))
    done
    echo "$total"
  fi
}
# audit_begin / audit_end NAME: database growth per request over the scenarios
# in between (the audit queue is given 3 s to drain).
audit_begin() { SERVER_REQUESTS=0; AUDIT_START=$(db_bytes); }
declare -A AUDIT_BPR
audit_end() {
  sleep 3
  local grew=$(( $(db_bytes) - AUDIT_START ))
  # Two decimals below 10 bytes (folded repeats cost a fraction of a byte).
  AUDIT_BPR[$1]=$(awk -v b="$grew" -v n="$SERVER_REQUESTS" 'BEGIN { v = (n > 0) ? b / n : 0; printf (v < 10 ? "%.2f" : "%.0f"), v }')
}

# Other work on the machine skews every figure; record how busy it was.
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)

# Signing rates are measured before and after the scenarios; the ratios use the
# higher (less disturbed) of the two, so a busy moment does not flatter them.
log "openssl speed -seconds 3 -elapsed ecdsap256 / rsa2048 (one core, before)"
ES256_RATE_1=$(openssl_sign_rate ecdsap256)
RSA_RATE_1=$(openssl_sign_rate rsa2048)
log "server log level: RUST_LOG=$SERVER_LOG_LEVEL"

# ---------------------------------------------------------------- memory
# Idle RSS after the first start, then after 100 password logins (25 rounds
# of 4 at once) with the credential cache off, so every login hashes.
EXTRA_ENV=(BERTH_CREDENTIAL_CACHE_TTL=0)
start_server memory
printf '%s\n' "$ALICE_PW" | berth user add alice --password-stdin >/dev/null ||
  die "berth user add alice failed"
sleep 2
IDLE_START=$(rss_kib "$SERVER_PID")
LOGIN_FAILED=0
for round in $(seq 1 25); do
  pids=()
  for i in 1 2 3 4; do
    curl -fsS --max-time 30 -o /dev/null -H "Authorization: Basic $BASIC" "$BASE$BASIC_PATH" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || LOGIN_FAILED=$((LOGIN_FAILED + 1)); done
done
sleep 2
IDLE_LOGINS=$(rss_kib "$SERVER_PID")
stop_server
RSS_MEMORY=$LAST_RSS
EXTRA_ENV=()

# ---------------------------------------------------------------- ES256, reuse on
start_server es256
audit_begin
sanity basic-es256 -H "Authorization: Basic $BASIC" "$BASE$BASIC_PATH"
scenario basic-es256 ES256 "$BASIC_PATH" -H "Authorization: Basic $BASIC"
audit_end sqlite-warm
LOAD_MODE=distinct scenario distinct-es256 ES256 "$BASIC_PATH" -H "Authorization: Basic $BASIC"

curl -fsS --max-time 10 -H "Authorization: Basic $BASIC" \
  "$BASE$BASIC_PATH&offline_token=true&client_id=load" >"$TMP/offline.json" ||
  die "offline_token request failed"
REFRESH=$(sed -n 's/.*"refresh_token":"\([^"]*\)".*/\1/p' "$TMP/offline.json")
[[ -n $REFRESH ]] || die "no refresh_token in $(cat "$TMP/offline.json")"
REFRESH_BODY="grant_type=refresh_token&refresh_token=$REFRESH&client_id=load&service=registry&scope=$SCOPE_PULL"
sanity refresh-es256 -X POST -H 'Content-Type: application/x-www-form-urlencoded' \
  --data "$REFRESH_BODY" "$BASE/token"
LOAD_METHOD=POST LOAD_BODY=$REFRESH_BODY scenario refresh-es256 ES256 /token

sanity anon-es256 "$BASE$ANON_PATH"
scenario anon-es256 ES256 "$ANON_PATH"
# The server's peak so far, then the peak of the 1,000 connections alone
# (writing 5 to clear_refs resets VmHWM to the current RSS).
HWM_BEFORE_C1000=$(rss_kib "$SERVER_PID" VmHWM)
RSS_BEFORE_C1000=$(rss_kib "$SERVER_PID")
C1000_RESET=0
if echo 5 >"/proc/$SERVER_PID/clear_refs" 2>/dev/null; then C1000_RESET=1; fi
LOAD_CONNS=1000 scenario c1000-es256 ES256 "$BASIC_PATH" -H "Authorization: Basic $BASIC"
stop_server
RSS_C1000=$LAST_RSS
RSS_ES256=$(( ${HWM_BEFORE_C1000:-0} > LAST_RSS ? ${HWM_BEFORE_C1000:-0} : LAST_RSS ))

# ---------------------------------------------------------------- ES256, reuse off
EXTRA_ENV=(BERTH_TOKEN_REUSE=0)
start_server es256-noreuse
sanity basic-es256-noreuse -H "Authorization: Basic $BASIC" "$BASE$BASIC_PATH"
scenario basic-es256-noreuse ES256 "$BASIC_PATH" -H "Authorization: Basic $BASIC"
stop_server
EXTRA_ENV=()

# ---------------------------------------------------------------- soak
# LOAD_SOAK=SECONDS: warm Basic ES256 (reuse and folding at their defaults) over
# 200 connections on a server of its own, VmRSS sampled every second by a
# bounded background loop. Flatness is judged from the 5th second on, once the
# connections are open; audit bytes per request are the database's growth over
# the soak (and 3 s of drain) divided by its requests.
if ((SOAK > 0)); then
  start_server soak
  sanity soak-es256 -H "Authorization: Basic $BASIC" "$BASE$BASIC_PATH"
  audit_begin
  SOAK_START=$(rss_kib "$SERVER_PID")
  (
    for _ in $(seq 1 $((SOAK + 70))); do
      sleep 1
      rss_kib "$SERVER_PID"
    done
  ) >"$TMP/soak-rss.txt" &
  SAMPLER_PID=$!
  LOAD_CONNS=200 LOAD_SECONDS=$SOAK scenario soak-es256 ES256 "$BASIC_PATH" -H "Authorization: Basic $BASIC"
  kill "$SAMPLER_PID" 2>/dev/null || true
  wait "$SAMPLER_PID" 2>/dev/null || true
  SAMPLER_PID=
  # Only the samples taken while wrk ran (one a second).
  mapfile -t SOAK_RSS < <(head -n "$SOAK" "$TMP/soak-rss.txt")
  ((${#SOAK_RSS[@]} > 0)) || die "soak: no RSS samples"
  audit_end soak
  SOAK_DRAINED=$(rss_kib "$SERVER_PID")
  stop_server
  SOAK_STEADY=("${SOAK_RSS[@]:4}")
  ((${#SOAK_STEADY[@]} > 0)) || SOAK_STEADY=("${SOAK_RSS[@]}")
  SOAK_MIN=$(printf '%s\n' "${SOAK_STEADY[@]}" | sort -n | head -n 1)
  SOAK_MAX=$(printf '%s\n' "${SOAK_STEADY[@]}" | sort -n | tail -n 1)
  SOAK_FIRST=${SOAK_STEADY[0]}
  SOAK_END=${SOAK_RSS[-1]}
  printf '%s\n' "${SOAK_RSS[@]}" | awk '{ printf "%s%.1f", (NR > 1 ? " " : ""), $1 / 1024 } END { print "" }' >"$TMP/soak-mib.txt"
fi

# ---------------------------------------------------------------- RS256
# A fresh keys dir whose only key is RSA, created before the server starts (so
# serve does not generate an ES256 key); same database, so alice exists.
KEYS_DIR=$TMP/keys-rs256
berth key generate --alg rs256 >/dev/null || die "berth key generate --alg rs256 failed"
start_server rs256
sanity basic-rs256 -H "Authorization: Basic $BASIC" "$BASE$BASIC_PATH"
grep -q '"token":"eyJhbGciOiJSUzI1Ni' "$TMP/sanity.json" || die "basic-rs256: token is not RS256"
scenario basic-rs256 RSA "$BASIC_PATH" -H "Authorization: Basic $BASIC"
LOAD_MODE=distinct scenario distinct-rs256 RSA "$BASIC_PATH" -H "Authorization: Basic $BASIC"
LOAD_MODE=mix scenario mix-rs256 RSA "$BASIC_PATH" -H "Authorization: Basic $BASIC"
stop_server
RSS_RS256=$LAST_RSS
EXTRA_ENV=(BERTH_TOKEN_REUSE=0)
start_server rs256-noreuse
scenario basic-rs256-noreuse RSA "$BASIC_PATH" -H "Authorization: Basic $BASIC"
stop_server
EXTRA_ENV=()
KEYS_DIR=$TMP/keys

# ---------------------------------------------------------------- PostgreSQL
PG_NOTE=
if [[ ${LOAD_POSTGRES:-1} != 0 ]] && command -v psql >/dev/null && PG_ADMIN=$("$ROOT/scripts/start-postgres.sh" 2>/dev/null | tail -n 1) && [[ $PG_ADMIN == postgres://* ]]; then
  PG_DB=berth_load_$$
  psql "$PG_ADMIN" -qAtc "CREATE DATABASE $PG_DB" >/dev/null || die "cannot create database $PG_DB"
  DATABASE=${PG_ADMIN%/*}/$PG_DB
  start_server pg
  printf '%s\n' "$ALICE_PW" | berth user add alice --password-stdin >/dev/null ||
    die "berth user add alice (PostgreSQL) failed"
  audit_begin
  sanity basic-pg -H "Authorization: Basic $BASIC" "$BASE$BASIC_PATH"
  scenario basic-pg ES256 "$BASIC_PATH" -H "Authorization: Basic $BASIC"
  curl -fsS --max-time 10 -H "Authorization: Basic $BASIC" \
    "$BASE$BASIC_PATH&offline_token=true&client_id=load" >"$TMP/offline.json" ||
    die "offline_token request (PostgreSQL) failed"
  REFRESH=$(sed -n 's/.*"refresh_token":"\([^"]*\)".*/\1/p' "$TMP/offline.json")
  REFRESH_BODY="grant_type=refresh_token&refresh_token=$REFRESH&client_id=load&service=registry&scope=$SCOPE_PULL"
  LOAD_METHOD=POST LOAD_BODY=$REFRESH_BODY scenario refresh-pg ES256 /token
  audit_end postgres
  stop_server
  DATABASE=$TMP/berth.db
else
  PG_NOTE="PostgreSQL skipped (LOAD_POSTGRES=0, or scripts/start-postgres.sh / psql unavailable)"
fi

# ---------------------------------------------------------------- openssl, same run
log "openssl speed -seconds 3 -elapsed ecdsap256 / rsa2048 (one core, after)"
ES256_RATE_2=$(openssl_sign_rate ecdsap256)
RSA_RATE_2=$(openssl_sign_rate rsa2048)
for v in "$ES256_RATE_1" "$ES256_RATE_2" "$RSA_RATE_1" "$RSA_RATE_2"; do
  [[ $v =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "could not parse openssl speed output (got '$v')"
done
maxf() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b) ? a : b }'; }
ES256_RATE=$(maxf "$ES256_RATE_1" "$ES256_RATE_2")
RSA_RATE=$(maxf "$RSA_RATE_1" "$RSA_RATE_2")

# ---------------------------------------------------------------- report
REPORT=$TARGET_DIR/load-report.txt
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
meets() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=") ? v >= t : v <= t; print ok ? "ok" : "MISS" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

{
  echo "berth load test — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)," \
    "$(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo unknown cpu))," \
    "load generator on the same machine; loadavg before $LOADAVG_START, after $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "wrk -t$THREADS -d${DURATION}s per scenario; server RUST_LOG=$SERVER_LOG_LEVEL; $(openssl version | awk '{print $1, $2}')"
  echo "single-core signing (higher of before/after): ES256 $(printf '%.0f' "$ES256_RATE") sign/s" \
    "(openssl speed ecdsap256: $(printf '%.0f' "$ES256_RATE_1") / $(printf '%.0f' "$ES256_RATE_2"))," \
    "RSA-2048 $(printf '%.0f' "$RSA_RATE") sign/s (openssl speed rsa2048: $(printf '%.0f' "$RSA_RATE_1") / $(printf '%.0f' "$RSA_RATE_2"))"
  if awk -v l="${LOADAVG_START%% *}" 'BEGIN { exit !(l >= 1.0) }'; then
    echo "WARNING: the machine was busy before the run (loadavg ${LOADAVG_START%% *}); other work skews throughput, latency and the openssl rates"
  fi
  echo
  printf '%-20s %6s %9s %8s %8s %7s  %s\n' scenario conns tokens/s p50_ms p99_ms errors "ratio to one core (target)"
  for s in "${SCENARIOS[@]}"; do
    case $s in
      basic-es256) tgt=0.5 ;;
      refresh-es256 | basic-pg | refresh-pg) tgt=0.4 ;;
      basic-rs256) tgt=10 ;;
      *) tgt= ;;
    esac
    if [[ ${R_BASE[$s]} == RSA ]]; then base=$RSA_RATE; what=RSA-2048; else base=$ES256_RATE; what=ES256; fi
    r=$(ratio "${R_TPS[$s]}" "$base")
    if [[ -n $tgt ]]; then
      rt="${r}x $what (>=${tgt}x $(meets "$r" '>=' "$tgt"))"
    else
      rt="${r}x $what"
    fi
    printf '%-20s %6s %9s %8s %8s %7s  %s\n' "$s" "${R_CONNS[$s]}" "${R_TPS[$s]}" "${R_P50[$s]}" "${R_P99[$s]}" "${R_ERR[$s]}" "$rt"
  done
  echo
  echo "idle RSS: $(mib "$IDLE_START") MiB after start, $(mib "$IDLE_LOGINS") MiB after 100 password logins with credential_cache_ttl = 0 ($LOGIN_FAILED failed)" \
    "(target <= 20 MiB: $(meets "$(mib "$(( IDLE_START > IDLE_LOGINS ? IDLE_START : IDLE_LOGINS ))")" '<=' 20)); peak during the logins $(mib "$RSS_MEMORY") MiB"
  echo "peak RSS (VmHWM): ES256 server incl. 1,000 connections $(mib "$RSS_ES256") MiB (target <= 64 MiB: $(meets "$(mib "$RSS_ES256")" '<=' 64))," \
    "the 1,000 connections' own peak $( ((C1000_RESET)) && echo "$(mib "$RSS_C1000") MiB from $(mib "$RSS_BEFORE_C1000") MiB before them" || echo "unknown (VmHWM could not be reset)")," \
    "RS256 server $(mib "$RSS_RS256") MiB; c1000 errors ${R_ERR[c1000-es256]} (target 0)"
  if ((SOAK > 0)); then
    echo "soak: ${R_CONNS[soak-es256]} connections for ${SOAK} s, ${R_TPS[soak-es256]} tokens/s, ${R_ERR[soak-es256]} errors;" \
      "RSS $(mib "$SOAK_START") MiB before, from the 5th second $(mib "$SOAK_FIRST") first / $(mib "$SOAK_MIN") min / $(mib "$SOAK_MAX") max / $(mib "$SOAK_END") last," \
      "spread $(mib $((SOAK_MAX - SOAK_MIN))) MiB (target <= 5 MiB: $(meets "$(mib $((SOAK_MAX - SOAK_MIN)))" '<=' 5)); $(mib "$SOAK_DRAINED") MiB 3 s after;" \
      "audit ${AUDIT_BPR[soak]} bytes per request"
    echo "soak VmRSS each second (MiB): $(cat "$TMP/soak-mib.txt")"
  fi
  echo "audit bytes per request (database growth / requests): SQLite ${AUDIT_BPR[sqlite-warm]} (basic-es256)${AUDIT_BPR[postgres]:+, PostgreSQL ${AUDIT_BPR[postgres]} (basic-pg + refresh-pg)}"
  [[ -n $PG_NOTE ]] && echo "$PG_NOTE"
  echo "errors = non-2xx/3xx responses + socket errors reported by wrk; targets are goals, not assertions"
} | tee "$REPORT"
log "report written to $REPORT"
