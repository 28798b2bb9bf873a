#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the shared-study tests.
# Prints the URL to use (WBCLF_TEST_POSTGRES_URL) on stdout; `.ci/postgres.sh stop` stops it.
set -euo pipefail
PGPORT="${PGPORT:-55432}"
PGDATA="${PGDATA_DIR:-/tmp/wbclf-ci-pg}"
if [ "${1:-}" = "stop" ]; then
    PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
    su postgres -s /bin/sh -c "$PGBIN/pg_ctl -D $PGDATA -m fast stop" >/dev/null 2>&1 || true
    exit 0
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
rm -rf "$PGDATA"
mkdir -p "$PGDATA"
chown postgres "$PGDATA"
su postgres -s /bin/sh -c "$PGBIN/initdb -D $PGDATA -A trust -U postgres" >/dev/null
su postgres -s /bin/sh -c "$PGBIN/pg_ctl -D $PGDATA -w -l $PGDATA/server.log \
    -o '-c listen_addresses=127.0.0.1 -p $PGPORT -k /tmp' start" >/dev/null
su postgres -s /bin/sh -c "$PGBIN/createdb -h 127.0.0.1 -p $PGPORT -U postgres wbclf_test"
echo "postgresql://postgres@127.0.0.1:$PGPORT/wbclf_test"
