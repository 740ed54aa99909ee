#!/usr/bin/env bash
# Starts Debian's PostgreSQL cluster for berth's tests and makes sure a role that
# may create databases exists. Prints the admin URL the tests read from
# BERTH_TEST_POSTGRES_URL (each test creates and drops its own database).
# Idempotent; needs root (or the postgres user) and the postgresql package.
set -euo pipefail

version=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1)
if [ -z "$version" ]; then
  echo "start-postgres: PostgreSQL is not installed (apt-get install postgresql)" >&2
  exit 1
fi
cluster=main
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$version $cluster"; then
  echo "start-postgres: creating cluster $version/$cluster" >&2
  pg_createcluster "$version" "$cluster" >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1==v && $2==c {print $4}' | grep -q online; then
  echo "start-postgres: starting cluster $version/$cluster" >&2
  pg_ctlcluster "$version" "$cluster" start >&2
fi
port=$(pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1==v && $2==c {print $3}')

as_postgres() {
  if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi
}
for _ in $(seq 1 50); do
  as_postgres psql -p "$port" -qAtc 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.2
done
as_postgres psql -p "$port" -v ON_ERROR_STOP=1 -qAt >/dev/null <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'berth_test') THEN
    CREATE ROLE berth_test LOGIN CREATEDB PASSWORD 'berth_test';
  END IF;
END
$$;
SQL
echo "postgres://berth_test:berth_test@127.0.0.1:${port}/postgres"
