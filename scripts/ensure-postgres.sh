#!/usr/bin/env bash
# Make sure a PostgreSQL server is reachable and print the database URL to test against.
#
# stdout carries only the URL (so `url=$(scripts/ensure-postgres.sh)` works); logs go to stderr.
# Tried in order:
#   a) SESSIONSTORE_TEST_DATABASE_URL, when set: checked, then printed as is;
#   b) a server already answering on 127.0.0.1:5432;
#   c) this machine's own cluster, started with pg_ctlcluster (Debian/Ubuntu);
#   d) a throwaway cluster: initdb into a temp dir, trust auth, a free port on 127.0.0.1.
#      It keeps running after this script exits (meant for CI); its data dir and the command
#      that stops it are printed on stderr.
# In every case the database exists and the role may create schemas in it (tests use one
# schema per test).
#
# Environment:
#   SESSIONSTORE_TEST_DATABASE_URL     use this server/database (path a)
#   ENSURE_POSTGRES_FORCE_THROWAWAY=1  skip b) and c): always start a throwaway cluster
#   ENSURE_POSTGRES_WAIT_SECONDS       how long to wait for a server to accept connections (30)
set -euo pipefail

readonly DB_NAME=test
readonly DB_USER=postgres
readonly DEFAULT_HOST=127.0.0.1
readonly DEFAULT_PORT=5432
readonly WAIT_SECONDS=${ENSURE_POSTGRES_WAIT_SECONDS:-30}

log() { printf 'ensure-postgres: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# The newest installed server's binaries; client tools fall back to $PATH.
find_bindir() {
    local dir
    # shellcheck disable=SC2012  # version directories are plain numbers; sort -V orders them
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [[ -z $dir ]] && command -v pg_config >/dev/null; then
        dir=$(pg_config --bindir)
    fi
    printf '%s' "$dir"
}
BINDIR=$(find_bindir)

pgbin() {
    if [[ -n $BINDIR && -x $BINDIR/$1 ]]; then
        printf '%s' "$BINDIR/$1"
    elif command -v "$1" >/dev/null; then
        command -v "$1"
    else
        die "$1 not found (install the PostgreSQL client/server packages)"
    fi
}
PSQL=$(pgbin psql)
PG_ISREADY=$(pgbin pg_isready)

# A URL with any password hidden, for logs.
redact() { sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#' <<<"$1"; }

# The same URL pointing at another database (keeps user, password, host, port, query).
with_dbname() {
    python3 - "$1" "$2" <<'PY'
import sys
from urllib.parse import quote, urlsplit

url, dbname = sys.argv[1], sys.argv[2]
print(urlsplit(url)._replace(path="/" + quote(dbname)).geturl())
PY
}

dbname_of() {
    python3 - "$1" <<'PY'
import sys
from urllib.parse import unquote, urlsplit

print(unquote(urlsplit(sys.argv[1]).path.lstrip("/")))
PY
}

# Wait (bounded) until the server behind a connection string accepts connections.
wait_ready() {
    local conn=$1 i
    for ((i = 0; i < WAIT_SECONDS; i++)); do
        if "$PG_ISREADY" -q -t 2 -d "$conn"; then
            return 0
        fi
        sleep 1
    done
    return 1
}

psql_at() { "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 -d "$@"; }

# Can we log in? (pg_isready only says the server accepts connections, not that we may.)
can_connect() { psql_at "$1" -c 'select 1' >/dev/null 2>&1; }

# Create the URL's database if it is missing, then check the role may create schemas in it.
ensure_database() {
    local url=$1 dbname maint exists
    dbname=$(dbname_of "$url")
    [[ -n $dbname ]] || die "no database name in $(redact "$url")"
    if ! can_connect "$url"; then
        maint=$(with_dbname "$url" postgres)
        # SQL on stdin: psql interpolates :'name' there, never in -c.
        exists=$(psql_at "$maint" -v name="$dbname" \
            <<<"select 1 from pg_database where datname = :'name'") ||
            die "cannot connect to $(redact "$url") nor to its maintenance database"
        if [[ -z $exists ]]; then
            log "creating database $dbname"
            # Another job may create it at the same moment: only fail if it is still missing.
            psql_at "$maint" -v name="$dbname" <<<'create database :"name"' >/dev/null 2>&1 ||
                can_connect "$url" ||
                die "could not create database $dbname on $(redact "$maint")"
        fi
        can_connect "$url" || die "cannot connect to $(redact "$url")"
    fi
    local may_create
    may_create=$(psql_at "$url" -c "select has_database_privilege(current_database(), 'CREATE')")
    if [[ $may_create != t ]]; then
        die "role $(psql_at "$url" -c 'select current_user') may not create schemas in $dbname" \
            "(GRANT CREATE ON DATABASE $dbname TO ...)"
    fi
}

# A server on host:port that answers and lets $DB_USER in: ensure the database, print the URL.
use_server() {
    local host=$1 port=$2 url
    url="postgresql://$DB_USER@$host:$port/$DB_NAME"
    can_connect "postgresql://$DB_USER@$host:$port/postgres" || return 1
    ensure_database "$url"
    printf '%s\n' "$url"
}

# c) Start the machine's own cluster (Debian's postgresql-common), newest version, cluster main.
start_machine_cluster() {
    command -v pg_ctlcluster >/dev/null || return 1
    local version port
    # shellcheck disable=SC2012  # as above
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1 || true)
    [[ -n $version && -d /etc/postgresql/$version/main ]] || return 1
    log "starting the machine's cluster $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || return 1
    port=$(pg_lsclusters -h 2>/dev/null | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
    port=${port:-$DEFAULT_PORT}
    wait_ready "host=$DEFAULT_HOST port=$port" || return 1
    printf '%s' "$port"
}

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# d) initdb + pg_ctl into a temp dir. initdb refuses to run as root: use the postgres OS user.
start_throwaway_cluster() {
    local initdb pg_ctl as=() dir data port attempt
    initdb=$(pgbin initdb)
    pg_ctl=$(pgbin pg_ctl)
    if [[ $(id -u) == 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root and there is no postgres OS user for initdb"
        as=(runuser -u postgres --)
    fi
    dir=$(mktemp -d "${TMPDIR:-/tmp}/sessionstore-pg.XXXXXX")
    data=$dir/data
    if ((${#as[@]})); then chown postgres: "$dir"; fi
    log "initdb into $data"
    "${as[@]}" "$initdb" -D "$data" -U "$DB_USER" --auth=trust --encoding=UTF8 --no-locale \
        --no-sync >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        die "initdb failed"
    }
    # The port is free when probed but could be taken before the server binds it: retry.
    for attempt in 1 2 3; do
        port=$(free_port)
        log "starting a throwaway cluster on $DEFAULT_HOST:$port"
        # Throwaway data: durability is not needed, so skip fsync. Unix socket in our own dir.
        if "${as[@]}" "$pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t "$WAIT_SECONDS" \
            -o "-c listen_addresses=$DEFAULT_HOST -p $port -k $dir -c fsync=off" start >&2 &&
            wait_ready "host=$DEFAULT_HOST port=$port"; then
            log "throwaway cluster data dir: $data"
            log "stop it with: ${as[*]}${as:+ }$pg_ctl -D $data stop -m fast && rm -rf $dir"
            printf '%s' "$port"
            return 0
        fi
        log "start attempt $attempt failed; server log:"
        tail -n 20 "$dir/postgres.log" >&2 || true
    done
    die "could not start a throwaway cluster (data dir $data)"
}

main() {
    local port
    # a) an explicit URL wins.
    if [[ -n ${SESSIONSTORE_TEST_DATABASE_URL:-} ]]; then
        local url=$SESSIONSTORE_TEST_DATABASE_URL
        log "checking SESSIONSTORE_TEST_DATABASE_URL=$(redact "$url")"
        wait_ready "$url" || die "no server answers at $(redact "$url")"
        ensure_database "$url"
        printf '%s\n' "$url"
        return
    fi
    if [[ ${ENSURE_POSTGRES_FORCE_THROWAWAY:-} != 1 ]]; then
        # b) a server already answering on the default port.
        if "$PG_ISREADY" -q -t 2 -h "$DEFAULT_HOST" -p "$DEFAULT_PORT"; then
            log "using the server on $DEFAULT_HOST:$DEFAULT_PORT"
            use_server "$DEFAULT_HOST" "$DEFAULT_PORT" && return
            log "cannot log in there as $DB_USER; trying a throwaway cluster"
        # c) the machine's own cluster, if it is merely stopped.
        elif port=$(start_machine_cluster); then
            use_server "$DEFAULT_HOST" "$port" && return
            log "cannot log in to the machine's cluster as $DB_USER; trying a throwaway cluster"
        else
            log "no server on $DEFAULT_HOST:$DEFAULT_PORT and none could be started there"
        fi
    fi
    # d) our own throwaway cluster.
    port=$(start_throwaway_cluster)
    use_server "$DEFAULT_HOST" "$port" || die "cannot log in to the throwaway cluster"
}

main "$@"
