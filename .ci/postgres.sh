#!/usr/bin/env bash
# A local PostgreSQL server for the store tests (Debian/Ubuntu; run as root or with sudo).
#
#   eval "$(bash .ci/postgres.sh)"     # or: make postgres, then paste the export line it prints
#
# Installs Debian's `postgresql` package when the server is missing, creates and starts a
# cluster of the newest installed major version, and creates (or updates) the role `llmos`
# (password `llmos`, CREATEDB: the tests create a fresh database per test) and its database
# `llmos_test`. Running it again changes nothing. Progress goes to stderr; stdout is only the
# export line, so `eval` can read it.
set -euo pipefail

PG_USER="${LLMOS_PG_USER:-llmos}"
PG_PASSWORD="${LLMOS_PG_PASSWORD:-llmos}"
PG_DATABASE="${LLMOS_PG_DATABASE:-llmos_test}"
PG_CLUSTER="${LLMOS_PG_CLUSTER:-main}"

log() { echo "postgres.sh: $*" >&2; }

# Everything the steps and the tools they run print goes to stderr (pg_ctl, for one, prints
# "Removed stale pid file." to stdout after an unclean shutdown); stdout gets only the export
# line. (A redirected function, not a saved fd: a server started here would inherit that fd and
# keep the caller's $(...) waiting.)
main() {
    # Root runs the cluster tools directly; anyone else through sudo.
    if [ "$(id -u)" -eq 0 ]; then
        as_root() { "$@"; }
        as_postgres() { runuser -u postgres -- "$@"; }
    else
        as_root() { sudo "$@"; }
        as_postgres() { sudo -u postgres "$@"; }
    fi

    # 1. The server binaries (postgresql-common's pg_* wrappers and /usr/lib/postgresql/<major>).
    if ! command -v pg_lsclusters >/dev/null || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
        log "installing Debian's postgresql package"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    version="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)"

    # 2. The cluster: the package's postinst usually creates `main`; create it when it did not.
    if ! pg_lsclusters -h | awk -v v="$version" -v c="$PG_CLUSTER" '$1 == v && $2 == c {f = 1} END {exit !f}'; then
        log "creating cluster $version/$PG_CLUSTER"
        # UTF-8 whatever the machine's locale, so Chinese text round-trips.
        as_root pg_createcluster --locale C.UTF-8 --encoding UTF8 "$version" "$PG_CLUSTER" >&2
    fi
    # pg_lsclusters -h: version cluster port status owner data-directory log-file
    read -r port status < <(pg_lsclusters -h | awk -v v="$version" -v c="$PG_CLUSTER" '$1 == v && $2 == c {print $3, $4}')
    if [[ "$status" != online* ]]; then
        log "starting cluster $version/$PG_CLUSTER on port $port"
        as_root pg_ctlcluster "$version" "$PG_CLUSTER" start
    fi
    for _ in $(seq 30); do
        pg_isready -q -h 127.0.0.1 -p "$port" && break
        sleep 1
    done
    pg_isready -q -h 127.0.0.1 -p "$port" || { log "server on port $port is not ready"; exit 1; }

    # 3. The role and its database, created when missing, the password and CREATEDB always (re)set.
    # psql fills :'x' (a quoted literal) and :"x" (a quoted identifier) from -v; \gexec runs the
    # statement a query returns, so CREATE only happens when the row does not exist yet.
    # `cd /`: psql runs as postgres, who may not be able to read the caller's directory.
    (cd / && as_postgres psql -X -q -p "$port" -v ON_ERROR_STOP=1 \
        -v user="$PG_USER" -v password="$PG_PASSWORD" -v db="$PG_DATABASE" >/dev/null) <<'SQL'
SELECT format('CREATE ROLE %I', :'user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
ALTER ROLE :"user" WITH LOGIN CREATEDB PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I TEMPLATE template0 ENCODING %L LC_COLLATE %L LC_CTYPE %L',
              :'db', :'user', 'UTF8', 'C', 'C')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
    log "ready: cluster $version/$PG_CLUSTER on 127.0.0.1:$port, role $PG_USER, database $PG_DATABASE"
}
main >&2

echo "export LLMOS_TEST_DATABASE_URL=postgresql+psycopg://$PG_USER:$PG_PASSWORD@127.0.0.1:$port/$PG_DATABASE"
