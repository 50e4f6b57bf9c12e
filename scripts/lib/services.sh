# shellcheck shell=bash
# Sourced by scripts/test (and scripts/bench, scripts/resilience): make sure
# Redis, RabbitMQ and a MongoDB-wire server are reachable, and export
#   INLET_TEST_REDIS_URL, INLET_TEST_AMQP_URL, INLET_TEST_MONGO_URL,
#   INLET_SECANTUS_BIN, and INLET_TEST_RABBITMQ_NODE when the broker is a
#   private node (rabbitmqctl -n NODE; unset means the default node).
# A URL already set in the environment is used as is. Otherwise the default
# local port is used when something answers there, and failing that a
# private instance is started on a free port in a temporary directory and
# stopped again when the calling script exits.

INLET_SERVICES_TMP="${INLET_SERVICES_TMP:-$(mktemp -d -t inlet-services.XXXXXX)}"
INLET_VENV="${INLET_VENV:-$HOME/.cache/inlet-venv}"
_inlet_cleanups=()

log() { printf '[services] %s\n' "$*" >&2; }

port_open() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # port seconds what
  local deadline=$((SECONDS + $2))
  until port_open 127.0.0.1 "$1"; do
    if ((SECONDS >= deadline)); then
      log "$3 did not open port $1 within $2 s"
      return 1
    fi
    sleep 0.2
  done
}

services_cleanup() {
  local i
  for ((i = ${#_inlet_cleanups[@]} - 1; i >= 0; i--)); do
    eval "${_inlet_cleanups[$i]}" >/dev/null 2>&1 || true
  done
  rm -rf "$INLET_SERVICES_TMP"
}

ensure_redis() {
  if [[ -n "${INLET_TEST_REDIS_URL:-}" ]]; then
    log "Redis: using $INLET_TEST_REDIS_URL"
    return
  fi
  if port_open 127.0.0.1 6379; then
    export INLET_TEST_REDIS_URL="redis://127.0.0.1:6379"
    log "Redis: using the server on 127.0.0.1:6379"
    return
  fi
  local port
  port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$INLET_SERVICES_TMP" --daemonize yes \
    --pidfile "$INLET_SERVICES_TMP/redis.pid" --logfile "$INLET_SERVICES_TMP/redis.log"
  wait_port "$port" 20 redis-server || return 1
  _inlet_cleanups+=("kill \$(cat '$INLET_SERVICES_TMP/redis.pid')")
  export INLET_TEST_REDIS_URL="redis://127.0.0.1:$port"
  log "Redis: started a private server on port $port"
}

ensure_amqp() {
  if [[ -n "${INLET_TEST_AMQP_URL:-}" ]]; then
    log "RabbitMQ: using $INLET_TEST_AMQP_URL"
    return
  fi
  if port_open 127.0.0.1 5672; then
    export INLET_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f"
    log "RabbitMQ: using the broker on 127.0.0.1:5672"
    return
  fi
  local port dist node
  port=$(free_port)
  dist=$(free_port)
  node="inlet-test-$$@localhost"
  mkdir -p "$INLET_SERVICES_TMP/rabbit/mnesia" "$INLET_SERVICES_TMP/rabbit/log"
  # Our own config file: the system one may pin the listener to 5672.
  printf 'listeners.tcp.local = 127.0.0.1:%s\n' "$port" >"$INLET_SERVICES_TMP/rabbit/rabbitmq.conf"
  : >"$INLET_SERVICES_TMP/rabbit/rabbitmq-env.conf"
  # Debian's wrapper runs the node as the `rabbitmq` user when called by root.
  if [[ $(id -u) == 0 ]] && id rabbitmq >/dev/null 2>&1; then
    chmod 755 "$INLET_SERVICES_TMP"
    chown -R rabbitmq: "$INLET_SERVICES_TMP/rabbit"
  fi
  RABBITMQ_NODENAME="$node" RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT="$dist" \
    RABBITMQ_MNESIA_BASE="$INLET_SERVICES_TMP/rabbit/mnesia" \
    RABBITMQ_LOG_BASE="$INLET_SERVICES_TMP/rabbit/log" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$INLET_SERVICES_TMP/rabbit/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$INLET_SERVICES_TMP/rabbit/rabbitmq.conf" \
    RABBITMQ_CONF_ENV_FILE="$INLET_SERVICES_TMP/rabbit/rabbitmq-env.conf" \
    rabbitmq-server -detached
  _inlet_cleanups+=("rabbitmqctl -n '$node' stop")
  if ! wait_port "$port" 90 rabbitmq-server; then
    tail -n 30 "$INLET_SERVICES_TMP"/rabbit/log/*.log >&2 || true
    return 1
  fi
  rabbitmqctl -n "$node" --timeout 60 await_startup >/dev/null
  export INLET_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$port/%2f"
  # For tests that use rabbitmqctl (e.g. to close their own connection).
  export INLET_TEST_RABBITMQ_NODE="$node"
  log "RabbitMQ: started a private node $node on port $port"
}

ensure_venv() {
  if [[ ! -x "$INLET_VENV/bin/secantusd-py" ]]; then
    log "Python venv: installing SecantusDB into $INLET_VENV"
    python3 -m venv "$INLET_VENV"
    "$INLET_VENV/bin/pip" install --quiet --pre SecantusDB
  fi
  export INLET_SECANTUS_BIN="$INLET_VENV/bin/secantusd-py"
}

ensure_mongo() {
  ensure_venv
  if [[ -n "${INLET_TEST_MONGO_URL:-}" ]]; then
    log "MongoDB: using $INLET_TEST_MONGO_URL"
    return
  fi
  local port
  port=$(free_port)
  "$INLET_SECANTUS_BIN" --host 127.0.0.1 --port "$port" --storage-path :memory: \
    --log-level WARNING >"$INLET_SERVICES_TMP/secantus.log" 2>&1 &
  local pid=$!
  _inlet_cleanups+=("kill $pid")
  if ! wait_port "$port" 60 secantusd-py; then
    tail -n 30 "$INLET_SERVICES_TMP/secantus.log" >&2
    return 1
  fi
  # retryWrites=false: SecantusDB slows down sharply with retryable-write
  # records (see docs/ARCHITECTURE.md, Testing); production keeps the default.
  export INLET_TEST_MONGO_URL="mongodb://127.0.0.1:$port/?retryWrites=false"
  log "MongoDB: started a private SecantusDB on port $port"
}

ensure_services() {
  trap services_cleanup EXIT
  ensure_redis || return 1
  ensure_amqp || return 1
  ensure_mongo || return 1
}
