#!/usr/bin/env bash
# Provision and run a throwaway RabbitMQ broker on loopback (AMQP 0-9-1), standing in for the Hub Santé in tests and
# the demo: the distribution's `rabbitmq-server`, on free ports, with its own node name, data and log folders.
#
#   scripts/rabbitmq.sh run -- COMMAND...   start, run COMMAND with DISPO_AMQP_URL set, stop
#   scripts/rabbitmq.sh start               start in the background, print the URL
#   scripts/rabbitmq.sh stop                stop what `start` started, and remove its folders
#   scripts/rabbitmq.sh stop-node           stop the broker but keep its data and ports (a broker outage)
#   scripts/rabbitmq.sh start-node          start it again on its data and ports
#
# DISPO_RABBITMQ_STATE names the state file (default .cache/rabbitmq.env) so that several can run at once.
# When DISPO_AMQP_URL is set, `run` uses that broker and starts none.
# DISPO_RABBITMQ_TLS=1 adds a TLS listener (TLS 1.2 and 1.3) that requires a client certificate, as the Hub Santé
# does: a CA, the broker's certificate and a client's are made in the broker's folder, and the state file gives
# AMQPS_URL, TLS_CA, TLS_CERT and TLS_KEY.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_FILE="${DISPO_RABBITMQ_STATE:-$ROOT/.cache/rabbitmq.env}"

log() { printf '[rabbitmq] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=scripts/servers.sh
. "$ROOT/scripts/servers.sh"

install_prerequisites() {
  command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing the distribution's rabbitmq-server"
    # The package's own service is not wanted: this script starts private brokers itself.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    rm -f /usr/sbin/policy-rc.d
  else
    die "rabbitmq-server is missing: install it (apt-get install rabbitmq-server) or set DISPO_AMQP_URL"
  fi
}

server_bin() {
  if command -v rabbitmq-server >/dev/null 2>&1; then command -v rabbitmq-server; else echo /usr/lib/rabbitmq/bin/rabbitmq-server; fi
}


wait_ready() {
  # Ready when the AMQP listener answers the protocol header with Connection.Start (a method frame, type 1).
  local port="$1" pid="$2"
  for _ in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$RMQ_WORK/server.out" >&2 || true; die "the broker exited while starting"; }
    if python3 - "$port" <<'EOF' 2>/dev/null; then return 0; fi
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.sendall(b"AMQP\x00\x00\x09\x01")
sys.exit(0 if s.recv(1) == b"\x01" else 1)
EOF
    sleep 1
  done
  die "the broker did not become ready on port $port within 120 s (log: $RMQ_WORK/server.out)"
}

launch() {
  # The server switches to the `rabbitmq` user when started as root: its folders must belong to that user.
  mkdir -p "$RMQ_WORK/mnesia" "$RMQ_WORK/log"
  if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq:rabbitmq "$RMQ_WORK"; fi
  chmod 755 "$RMQ_WORK"
  RABBITMQ_NODENAME="$RMQ_NODE" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$RMQ_PORT" \
    RABBITMQ_DIST_PORT="$RMQ_DIST_PORT" ERL_EPMD_PORT="$RMQ_EPMD_PORT" \
    RABBITMQ_MNESIA_BASE="$RMQ_WORK/mnesia" RABBITMQ_LOG_BASE="$RMQ_WORK/log" \
    RABBITMQ_FEATURE_FLAGS_FILE="$RMQ_WORK/feature_flags" RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_WORK/enabled_plugins" \
    RABBITMQ_PID_FILE="$RMQ_WORK/rabbitmq.pid" RABBITMQ_CONFIG_FILE="$RMQ_WORK/rabbitmq" \
    setsid "$(server_bin)" >"$RMQ_WORK/server.out" 2>&1 &
  echo $! >"$RMQ_WORK/launcher.pid"
  wait_ready "$RMQ_PORT" "$!"
}

make_tls() {
  # A throwaway CA signs the broker's certificate (for 127.0.0.1 and localhost) and a client's.
  local d="$RMQ_WORK/tls"
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=dispo test CA" -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  for who in server client; do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$who" -keyout "$d/$who.key" -out "$d/$who.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=%s\n' \
      "$([ "$who" = server ] && echo serverAuth || echo clientAuth)" >"$d/$who.ext"
    openssl x509 -req -in "$d/$who.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
      -extfile "$d/$who.ext" -out "$d/$who.pem" 2>/dev/null
  done
  RMQ_TLS_PORT="$(free_port)"
  {
    echo "listeners.ssl.default = $RMQ_TLS_PORT"
    echo "ssl_options.cacertfile = $d/ca.pem"
    echo "ssl_options.certfile = $d/server.pem"
    echo "ssl_options.keyfile = $d/server.key"
    echo "ssl_options.verify = verify_peer"
    echo "ssl_options.fail_if_no_peer_cert = true"
    echo "ssl_options.versions.1 = tlsv1.3"
    echo "ssl_options.versions.2 = tlsv1.2"
  } >>"$RMQ_WORK/rabbitmq.conf"
}

save_state() {
  mkdir -p "$(dirname "$STATE_FILE")"
  {
    echo "RMQ_WORK=$RMQ_WORK"; echo "RMQ_NODE=$RMQ_NODE"; echo "RMQ_PORT=$RMQ_PORT"
    echo "RMQ_DIST_PORT=$RMQ_DIST_PORT"; echo "RMQ_EPMD_PORT=$RMQ_EPMD_PORT"
    echo "AMQP_URL=amqp://guest:guest@127.0.0.1:$RMQ_PORT/"
    if [ -n "${RMQ_TLS_PORT:-}" ]; then
      echo "RMQ_TLS_PORT=$RMQ_TLS_PORT"
      echo "AMQPS_URL=amqps://guest:guest@127.0.0.1:$RMQ_TLS_PORT/"
      echo "TLS_CA=$RMQ_WORK/tls/ca.pem"; echo "TLS_CERT=$RMQ_WORK/tls/client.pem"; echo "TLS_KEY=$RMQ_WORK/tls/client.key"
    fi
  } >"$STATE_FILE"
}

start() {
  install_prerequisites
  if [ -f "$STATE_FILE" ]; then
    # shellcheck disable=SC1090
    ( . "$STATE_FILE"; [ -n "$(node_pids)" ] ) && die "a broker recorded in $STATE_FILE is running: stop it first"
    log "removing the record of a broker that is no longer running ($STATE_FILE)"
    ( . "$STATE_FILE"; rm -rf "$RMQ_WORK" ); rm -f "$STATE_FILE"
  fi
  RMQ_WORK="$(mktemp -d /tmp/dispo-rabbitmq.XXXXXX)"
  RMQ_NODE="dispo-$(basename "$RMQ_WORK" | cut -d. -f2)@localhost"
  RMQ_PORT="$(free_port)"; RMQ_DIST_PORT="$(free_port)"; RMQ_EPMD_PORT="$(free_port)"
  # Only loopback clients, the default guest account (allowed from loopback only), nothing else enabled.
  printf 'loopback_users.guest = true\nlisteners.tcp.default = %s\n' "$RMQ_PORT" >"$RMQ_WORK/rabbitmq.conf"
  printf '[].\n' >"$RMQ_WORK/enabled_plugins"
  RMQ_TLS_PORT=""
  if [ "${DISPO_RABBITMQ_TLS:-}" = 1 ]; then make_tls; fi
  save_state
  log "starting RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo '') on 127.0.0.1:$RMQ_PORT"
  launch
  log "ready at amqp://127.0.0.1:$RMQ_PORT/"
  echo "amqp://guest:guest@127.0.0.1:$RMQ_PORT/"
}

load_state() {
  [ -f "$STATE_FILE" ] || die "no broker recorded in $STATE_FILE"
  # shellcheck disable=SC1090
  . "$STATE_FILE"
}

node_pids() {
  # The node's Erlang VM (it runs under `su`, outside the launcher's process group) is told apart by the port
  # mapper's port it was given; the port mapper, a daemon of its own, by the same port in its environment.
  pgrep -f "beam.smp .*-epmd_port $RMQ_EPMD_PORT( |\$)" || true
  for pid in $(pgrep -x epmd || true); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "ERL_EPMD_PORT=$RMQ_EPMD_PORT"; then echo "$pid"; fi
  done
}

stop_node() {
  load_state
  local pgid pids
  pgid="$(cat "$RMQ_WORK/launcher.pid" 2>/dev/null || true)"
  pids="$(node_pids)"
  [ -n "$pgid" ] && kill -TERM -- "-$pgid" 2>/dev/null || true
  # shellcheck disable=SC2086
  stop_pids $pids
  [ -n "$pgid" ] && kill -KILL -- "-$pgid" 2>/dev/null || true
  rm -f "$RMQ_WORK/launcher.pid"
}

case "${1:-}" in
  start) start ;;
  stop)
    [ -f "$STATE_FILE" ] || { log "nothing to stop"; exit 0; }
    stop_node; rm -rf "$RMQ_WORK" "$STATE_FILE"; log "stopped" ;;
  stop-node) stop_node; log "node stopped (data kept)" ;;
  start-node) load_state; launch; log "node started again on 127.0.0.1:$RMQ_PORT" ;;
  run)
    shift; [ "${1:-}" = "--" ] && shift
    if [ -n "${DISPO_AMQP_URL:-}" ]; then
      log "using the broker at DISPO_AMQP_URL"
      exec "$@"
    fi
    url="$(start | tail -n 1)"
    trap '"$0" stop' EXIT
    export DISPO_AMQP_URL="$url"
    "$@"
    ;;
  *) echo "usage: $0 start|stop|stop-node|start-node|run -- COMMAND..." >&2; exit 2 ;;
esac
