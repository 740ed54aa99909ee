#!/usr/bin/env bash
# Replay benchmark for `berth policy diff`: writes ROWS synthetic audit rows
# (default 1,000,000) into a fresh SQLite database, then replays them under the
# example policy repository's policies and a candidate that freezes pushes to
# some team namespaces. Prints rows per second and the peak resident memory.
#
#   ROWS=N        rows to generate
#   BERTH=PATH    the berth binary (default: release/berth in CARGO_TARGET_DIR or
#                 target/, built if missing)
#
# Not a test: numbers depend on the machine. Needs python3 (row generation)
# and GNU time (/usr/bin/time) for the peak RSS.
set -euo pipefail

cd "$(dirname "$0")/.."
rows=${ROWS:-1000000}
berth=${BERTH:-${CARGO_TARGET_DIR:-target}/release/berth}
if [[ ! -x "$berth" ]]; then
    cargo build --release --bin berth
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export BERTH_DATABASE="$work/berth.db"
"$berth" db migrate >/dev/null

echo "generating $rows audit rows…" >&2
python3 - "$BERTH_DATABASE" "$rows" <<'PY'
import json, random, sqlite3, sys, time

db, rows = sys.argv[1], int(sys.argv[2])
rnd = random.Random(12)
now = int(time.time())
con = sqlite3.connect(db)
con.execute("PRAGMA journal_mode = WAL")
con.execute("PRAGMA synchronous = OFF")

def one(i):
    at = now - rnd.randrange(0, 20 * 86400)
    repeats = rnd.choice((1, 1, 1, 2, 5, 20))
    r = rnd.random()
    team = f"team-{rnd.randrange(50)}"
    user = f"user{rnd.randrange(2000)}"
    action = rnd.choice(("pull", "pull", "pull", "pull,push", "delete"))
    if r < 0.02:  # written before identities were recorded
        kind, subject, groups = "user", None, None
        scope = f"repository:{team}/app{rnd.randrange(20)}:{action}"
    elif r < 0.55:
        kind, subject, groups = "user", user, [team, "staff"]
        scope = f"repository:{team}/app{rnd.randrange(20)}:{action}"
    elif r < 0.65:
        kind, subject, groups = "user", user, [team]
        scope = f"repository:{user}/tools:{action}"
    elif r < 0.80:
        kind, subject, groups = "robot", f"robot$ci{rnd.randrange(30)}", [team]
        scope = f"repository:releases/app{rnd.randrange(40)}:pull repository:{team}/app:pull,push"
    elif r < 0.92:
        kind, subject, groups = "federated", f"sso-{user}", [f"sso:{team}", "role:offline_access"]
        scope = f"repository:{team}/app{rnd.randrange(20)}:pull"
    else:
        kind, subject, groups = "anonymous", "", []
        scope = f"repository:mirror/debian{rnd.randrange(5)}:pull"
    snapshot = subject is not None
    return (at, f"{i:016x}", f"10.{rnd.randrange(256)}.0.{rnd.randrange(256)}",
            subject or user, kind, "local", "registry", scope, "", "", "", "issued", "", 300,
            subject, json.dumps(sorted(groups)) if groups is not None else None,
            1 if snapshot else 0, repeats, at if repeats > 1 else None)

con.executemany(
    "INSERT INTO audit_log (at, request_id, client, account, kind, via, service, requested,"
    " granted, denied, rules, outcome, error, latency_us, subject, groups, snapshot, repeats, last_at)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    (one(i) for i in range(rows)))
con.commit()
con.close()
PY

cp -r examples/policy-repo/policies "$work/candidate"
cat > "$work/candidate/freeze.toml" <<'TOML'
[[rule]]
id = "freeze-team-1x"
name = "team-1*/**"
deny = ["push"]
TOML

echo "replaying…" >&2
start=$(date +%s.%N)
/usr/bin/time -f '%M' -o "$work/rss" \
    "$berth" policy diff --live examples/policy-repo/policies --policies "$work/candidate" \
    --since 30d --allow-loss >"$work/out"
end=$(date +%s.%N)
tail -n 2 "$work/out"
python3 - "$rows" "$start" "$end" "$(cat "$work/rss")" <<'PY'
import sys
rows, start, end, rss_kib = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
secs = end - start
print(f"replayed {rows} rows in {secs:.1f} s: {rows / secs:,.0f} rows/s; peak RSS {rss_kib / 1024:.0f} MiB")
PY
