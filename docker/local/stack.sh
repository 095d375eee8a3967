#!/usr/bin/env bash
# The production-like Airflow stack on this machine, from the project's venv:
# api-server, scheduler, dag-processor, triggerer and a Celery worker, with PostgreSQL
# (127.0.0.1) as the metadata DB and Redis (127.0.0.1) as the broker. Same settings as
# docker/docker-compose.yaml (both read docker/airflow.env).
#
#   docker/local/stack.sh up      # fresh DBs + sample city, migrate, pools, start the 5 services
#   docker/local/stack.sh check   # trigger the sample resource's DAG over REST, wait, check rows
#   docker/local/stack.sh down    # stop the services (by their process groups), drop the DBs
#   docker/local/stack.sh run     # up, check, down (what CI runs); prints the timings
#
# Settings: EXCHANGE_STACK (DB-name prefix and state dir; default airflow_exchange),
# AIRFLOW_PORT (default: a free port), AIRFLOW_HOST (the api-server's interface; default
# 127.0.0.1), SAMPLE_ROWS (default 20000), REDIS_URL.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/.venv/bin}
STACK=${EXCHANGE_STACK:-airflow_exchange}
STATE=${EXCHANGE_STACK_HOME:-$ROOT/.exchange/stacks/$STACK}
SERVICES=(api-server scheduler dag-processor triggerer worker)

log() { printf '[stack %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

load_env() {
    set -a
    # shellcheck disable=SC1091
    . "$ROOT/docker/airflow.env"
    # shellcheck disable=SC1091
    . "$STATE/stack.env"
    set +a
}

free_port() { "$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

write_env() {
    local port=$1 pg="postgresql+psycopg://postgres@127.0.0.1:5432/$STACK"
    local secrets
    secrets=$("$BIN/python" - <<'EOF'
import secrets
from cryptography.fernet import Fernet
print(Fernet.generate_key().decode(), secrets.token_urlsafe(32), secrets.token_urlsafe(16))
EOF
)
    read -r fernet jwt password <<<"$secrets"
    printf '{"admin": "%s"}\n' "$password" >"$STATE/passwords.json"
    chmod 600 "$STATE/passwords.json"
    umask 077
    cat >"$STATE/stack.env" <<EOF
AIRFLOW_HOME=$STATE/airflow
AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags
AIRFLOW__CORE__PLUGINS_FOLDER=$ROOT/dags/plugins
AIRFLOW__CORE__FERNET_KEY=$fernet
AIRFLOW__API_AUTH__JWT_SECRET=$jwt
AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=$STATE/passwords.json
AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$pg
AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=$pg
AIRFLOW__CELERY__BROKER_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
AIRFLOW__CELERY__RESULT_BACKEND=db+$pg
AIRFLOW__OPERATORS__DEFAULT_QUEUE=$STACK
AIRFLOW__API__PORT=$port
AIRFLOW__API__HOST=${AIRFLOW_HOST:-127.0.0.1}
AIRFLOW__API__BASE_URL=http://127.0.0.1:$port
AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$port/execution/
AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=$(free_port)
AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=$(free_port)
AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT=$(free_port)
AIRFLOW_API_URL=http://127.0.0.1:$port
EXCHANGE_HOME=$STATE/home
EOF
}

start() {  # start NAME CMD...: its own session, so `down` can stop it and its children
    local name=$1
    shift
    setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/pids/$name.pid"
    log "started $name (pid $!)"
}

up() {
    if [[ -f $STATE/stack.env ]]; then
        echo "stack $STACK is up already ($STATE); run: $0 down" >&2
        exit 1
    fi
    mkdir -p "$STATE/logs" "$STATE/pids" "$STATE/airflow" "$STATE/home"
    write_env "${AIRFLOW_PORT:-$(free_port)}"
    log "databases and the sample city (${SAMPLE_ROWS:-20000} rows) on PostgreSQL and MariaDB"
    "$BIN/python" "$ROOT/docker/local/sample_city.py" up "$STATE" "${SAMPLE_ROWS:-20000}" >>"$STATE/stack.env"
    load_env
    log "airflow db migrate ($STACK on PostgreSQL)"
    "$BIN/airflow" db migrate >"$STATE/logs/migrate.log" 2>&1 || {
        tail -n 30 "$STATE/logs/migrate.log" >&2
        exit 1
    }
    "$BIN/exchange" airflow pools --apply
    # loopback unless AIRFLOW_HOST says otherwise (Airflow's own default is every interface)
    start api-server "$BIN/airflow" api-server --host "$AIRFLOW__API__HOST" \
        --port "$AIRFLOW__API__PORT" --workers 1
    start scheduler "$BIN/airflow" scheduler
    start dag-processor "$BIN/airflow" dag-processor
    start triggerer "$BIN/airflow" triggerer
    start worker "$BIN/airflow" celery worker --queues "$STACK" --concurrency 4
    log "Airflow UI and API: $AIRFLOW_API_URL (admin, password in $STATE/passwords.json)"
}

check() {
    load_env
    "$BIN/python" "$ROOT/docker/local/trigger_and_check.py"
}

stop_service() {
    local pidfile=$STATE/pids/$1.pid pid
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

down() {
    local i
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        stop_service "${SERVICES[$i]}"
    done
    log "services stopped"
    "$BIN/python" "$ROOT/docker/local/sample_city.py" down
    log "databases dropped"
    if [[ ${KEEP_LOGS:-0} == 1 && -d $STATE/logs ]]; then
        rm -rf "$STATE.logs" && mv "$STATE/logs" "$STATE.logs" && log "logs kept in $STATE.logs"
    fi
    rm -rf "$STATE"
}

run() {
    local t0=$SECONDS ok=0
    trap 'down' EXIT
    up
    local t_up=$SECONDS
    if check; then ok=1; else
        for s in "${SERVICES[@]}"; do
            echo "--- last lines of $s.log"
            tail -n 30 "$STATE/logs/$s.log" || true
        done
    fi
    local t_check=$SECONDS
    trap - EXIT
    down
    log "timings: up $((t_up - t0)) s, trigger-to-checked $((t_check - t_up)) s, down $((SECONDS - t_check)) s, total $((SECONDS - t0)) s"
    [[ $ok == 1 ]] && log "distributed run OK" || { log "distributed run FAILED"; exit 1; }
}

case ${1:-} in
up | check | down | run) "$1" ;;
*)
    sed -n '2,15p' "$0"
    exit 2
    ;;
esac
