#!/usr/bin/env bash
# Real sink servers for the project's tests, from Debian's packages, on 127.0.0.1 only.
#
#   scripts/services.sh install                 apt-get install influxdb victoria-metrics postgresql (idempotent)
#   scripts/services.sh start  [NAME...]        start influxdb, influxdb-auth, victoriametrics, postgres,
#                                               postgres-tls (default: all)
#   scripts/services.sh stop   [NAME...]        stop them, by the PID recorded at start
#   scripts/services.sh env                     print the environment the tests read
#
# Environment:
#   SVC_DIR        runtime directory (default <repo>/target/services)
#   INFLUX_PORT    InfluxDB 1.x HTTP port (default 18086)
#   INFLUX_AUTH_PORT  a second InfluxDB 1.x with authentication on (default 18096), for the
#                  tests of credentials; its admin user and password are in `env`
#   VM_PORT        VictoriaMetrics HTTP port (default 18428)
#   PG_PORT        PostgreSQL port (default 55432)
#   PG_TLS_PORT    a second PostgreSQL with TLS and password logins only (default 55433), for the
#                  tests of sslmode and passwords; its CA, a second unrelated CA, its user and
#                  password are in `env`. Its certificate names `localhost` only (not 127.0.0.1).
#
# The tests read HA_INGESTOR_INFLUX_URL, HA_INGESTOR_INFLUX_AUTH_*, HA_INGESTOR_VM_URL and
# HA_INGESTOR_PG_DSN, HA_INGESTOR_PG_TLS_* (see `env`).
# Stopping and starting one server (for outage tests) keeps its data: `stop influxdb; start influxdb`.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
SVC_DIR=${SVC_DIR:-$REPO_DIR/target/services}
INFLUX_PORT=${INFLUX_PORT:-18086}
INFLUX_AUTH_PORT=${INFLUX_AUTH_PORT:-18096}
# A throwaway credential of a test server on loopback.
INFLUX_AUTH_USER=ha_admin
INFLUX_AUTH_PASSWORD=test-only-3f9c2a
VM_PORT=${VM_PORT:-18428}
PG_PORT=${PG_PORT:-55432}
PG_TLS_PORT=${PG_TLS_PORT:-55433}
# A throwaway credential of a test server on loopback.
PG_TLS_USER=ha_tls
PG_TLS_PASSWORD=test-only-7d41e0
PGBIN=/usr/lib/postgresql/15/bin

log() { echo "[services] $*" >&2; }

wait_until() { # seconds, description, command...
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then log "$what did not come up within ${limit}s"; return 1; fi
        sleep 0.1
    done
}

install() {
    local missing=()
    command -v influxd >/dev/null || missing+=(influxdb influxdb-client)
    command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
    [[ -x $PGBIN/initdb ]] || missing+=(postgresql)
    command -v psql >/dev/null || missing+=(postgresql-client)
    command -v curl >/dev/null || missing+=(curl)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

running() { [[ -f $1 ]] && kill -0 "$(head -n1 "$1")" 2>/dev/null; }

start_influxdb() { # [dir name, port, auth-enabled]
    local d=$SVC_DIR/${1:-influx} port=${2:-$INFLUX_PORT} auth=${3:-false}
    running "$d/pid" && return 0
    mkdir -p "$d"
    cat > "$d/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$((port + 2))"
[meta]
  dir = "$d/meta"
[data]
  dir = "$d/data"
  wal-dir = "$d/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:$port"
  auth-enabled = $auth
  log-enabled = false
CONF
    influxd run -config "$d/influxdb.conf" > "$d/influxd.log" 2>&1 &
    echo $! > "$d/pid"
    wait_until 30 InfluxDB curl -sf -o /dev/null "http://127.0.0.1:$port/ping"
    log "InfluxDB on 127.0.0.1:$port, authentication $auth (pid $(cat "$d/pid"))"
}

start_influxdb_auth() {
    start_influxdb influx-auth "$INFLUX_AUTH_PORT" true
    local url=http://127.0.0.1:$INFLUX_AUTH_PORT/query
    # The first admin may be created without credentials; after that they are needed.
    curl -sf -o /dev/null -u "$INFLUX_AUTH_USER:$INFLUX_AUTH_PASSWORD" "$url" --data-urlencode 'q=SHOW USERS' \
        || curl -sf -o /dev/null -XPOST "$url" \
            --data-urlencode "q=CREATE USER $INFLUX_AUTH_USER WITH PASSWORD '$INFLUX_AUTH_PASSWORD' WITH ALL PRIVILEGES"
}

start_victoriametrics() {
    local d=$SVC_DIR/vm
    running "$d/pid" && return 0
    mkdir -p "$d"
    victoria-metrics -storageDataPath="$d/data" -httpListenAddr="127.0.0.1:$VM_PORT" \
        -retentionPeriod=100y -search.latencyOffset=0s -search.disableCache -loggerLevel=WARN \
        > "$d/vm.log" 2>&1 &
    echo $! > "$d/pid"
    wait_until 30 VictoriaMetrics curl -sf "http://127.0.0.1:$VM_PORT/health"
    log "VictoriaMetrics on 127.0.0.1:$VM_PORT (pid $(cat "$d/pid"))"
}

start_postgres() {
    local d=$SVC_DIR/pg
    running "$d/data/postmaster.pid" && return 0
    mkdir -p "$d"
    local as=()
    if [[ $(id -u) == 0 ]]; then
        chown postgres:postgres "$d"
        as=(runuser -u postgres --)
    fi
    if [[ ! -f $d/data/PG_VERSION ]]; then
        "${as[@]}" "$PGBIN/initdb" -D "$d/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync > "$d/initdb.log" 2>&1
    fi
    "${as[@]}" "$PGBIN/pg_ctl" -D "$d/data" -l "$d/server.log" -w \
        -o "-p $PG_PORT -k $d -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start > /dev/null
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='ha'" | grep -q 1 \
        || psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc 'CREATE DATABASE ha'
    log "PostgreSQL on 127.0.0.1:$PG_PORT (pid $(head -n1 "$d/data/postmaster.pid"))"
}

# Makes a CA, a server certificate it signs for `localhost` only, and an unrelated CA (for the
# wrong-CA test), with openssl; kept across restarts.
make_pg_certs() { # dir, owner
    local c=$1
    [[ -f $c/server.crt ]] && return 0
    mkdir -p "$c"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=ha-ingestor test CA" \
        -keyout "$c/ca.key" -out "$c/ca.crt" 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=ha-ingestor other CA" \
        -keyout "$c/other-ca.key" -out "$c/other-ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$c/server.key" -out "$c/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > "$c/server.ext"
    openssl x509 -req -in "$c/server.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial \
        -days 3650 -extfile "$c/server.ext" -out "$c/server.crt" 2>/dev/null
    chmod 600 "$c/server.key"
    [[ -n $2 ]] && chown -R "$2" "$c"
    return 0
}

start_postgres_tls() {
    local d=$SVC_DIR/pg-tls
    running "$d/data/postmaster.pid" && return 0
    mkdir -p "$d"
    local as=() owner=
    if [[ $(id -u) == 0 ]]; then
        chown postgres:postgres "$d"
        as=(runuser -u postgres --)
        owner=postgres:postgres
    fi
    make_pg_certs "$d/certs" "$owner"
    if [[ ! -f $d/data/PG_VERSION ]]; then
        "${as[@]}" "$PGBIN/initdb" -D "$d/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync > "$d/initdb.log" 2>&1
        # The unix socket for set-up; over TCP only TLS with a password, plain text refused.
        printf '%s\n' 'local all all trust' \
            'hostssl all all 127.0.0.1/32 scram-sha-256' \
            'hostnossl all all 127.0.0.1/32 reject' > "$d/data/pg_hba.conf"
    fi
    "${as[@]}" "$PGBIN/pg_ctl" -D "$d/data" -l "$d/server.log" -w \
        -o "-p $PG_TLS_PORT -k $d -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=on -c ssl_cert_file=$d/certs/server.crt -c ssl_key_file=$d/certs/server.key" \
        start > /dev/null
    psql -h "$d" -p "$PG_TLS_PORT" -U postgres -qtAc \
        "SELECT 1 FROM pg_roles WHERE rolname='$PG_TLS_USER'" | grep -q 1 \
        || psql -h "$d" -p "$PG_TLS_PORT" -U postgres -qc \
            "CREATE ROLE $PG_TLS_USER LOGIN CREATEDB PASSWORD '$PG_TLS_PASSWORD'"
    psql -h "$d" -p "$PG_TLS_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='ha'" | grep -q 1 \
        || psql -h "$d" -p "$PG_TLS_PORT" -U postgres -qc "CREATE DATABASE ha OWNER $PG_TLS_USER"
    log "PostgreSQL with TLS on 127.0.0.1:$PG_TLS_PORT (pid $(head -n1 "$d/data/postmaster.pid"))"
}

stop_pid_file() { # pid file, name
    [[ -f $1 ]] || return 0
    local pid; pid=$(head -n1 "$1")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        local deadline=$((SECONDS + 20))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        log "stopped $2 (pid $pid)"
    fi
    rm -f "$1"
}

stop_one() {
    case $1 in
        influxdb) stop_pid_file "$SVC_DIR/influx/pid" InfluxDB ;;
        influxdb-auth) stop_pid_file "$SVC_DIR/influx-auth/pid" "InfluxDB (authentication on)" ;;
        victoriametrics) stop_pid_file "$SVC_DIR/vm/pid" VictoriaMetrics ;;
        postgres|postgres-tls)
            # SIGINT is PostgreSQL's fast shutdown; the postmaster removes its own pid file.
            local f=$SVC_DIR/pg/data/postmaster.pid
            [[ $1 == postgres-tls ]] && f=$SVC_DIR/pg-tls/data/postmaster.pid
            if running "$f"; then
                local pid; pid=$(head -n1 "$f")
                kill -INT "$pid"
                local deadline=$((SECONDS + 20))
                while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
                log "stopped $1 (pid $pid)"
            fi ;;
        *) log "unknown service $1 (influxdb, influxdb-auth, victoriametrics, postgres, postgres-tls)"; return 2 ;;
    esac
}

print_env() {
    echo "HA_INGESTOR_INFLUX_URL=http://127.0.0.1:$INFLUX_PORT"
    echo "HA_INGESTOR_INFLUX_AUTH_URL=http://127.0.0.1:$INFLUX_AUTH_PORT"
    echo "HA_INGESTOR_INFLUX_AUTH_USER=$INFLUX_AUTH_USER"
    echo "HA_INGESTOR_INFLUX_AUTH_PASSWORD=$INFLUX_AUTH_PASSWORD"
    echo "HA_INGESTOR_VM_URL=http://127.0.0.1:$VM_PORT"
    echo "HA_INGESTOR_PG_DSN=host=127.0.0.1 port=$PG_PORT user=postgres dbname=ha"
    echo "HA_INGESTOR_PG_TLS_PORT=$PG_TLS_PORT"
    echo "HA_INGESTOR_PG_TLS_USER=$PG_TLS_USER"
    echo "HA_INGESTOR_PG_TLS_PASSWORD=$PG_TLS_PASSWORD"
    echo "HA_INGESTOR_PG_TLS_CA=$SVC_DIR/pg-tls/certs/ca.crt"
    echo "HA_INGESTOR_PG_TLS_OTHER_CA=$SVC_DIR/pg-tls/certs/other-ca.crt"
}

cmd=${1:-}; shift || true
names=("$@")
((${#names[@]})) || names=(influxdb influxdb-auth victoriametrics postgres postgres-tls)
case $cmd in
    install) install ;;
    start) for n in "${names[@]}"; do case $n in
               influxdb) start_influxdb ;; influxdb-auth) start_influxdb_auth ;; victoriametrics) start_victoriametrics ;; postgres) start_postgres ;;
               postgres-tls) start_postgres_tls ;;
               *) log "unknown service $n"; exit 2 ;; esac; done ;;
    stop) for n in "${names[@]}"; do stop_one "$n"; done ;;
    env) print_env ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
esac
