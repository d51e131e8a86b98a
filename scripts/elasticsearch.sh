#!/usr/bin/env bash
# Provision and run a throwaway Elasticsearch, one node or a small cluster on loopback, for tests and benchmarks.
#
#   scripts/elasticsearch.sh run -- COMMAND...   start, run COMMAND with DISPO_ES_URL set, stop
#   scripts/elasticsearch.sh start               start in the background, print the URL(s)
#   scripts/elasticsearch.sh stop                stop what `start` started
#   scripts/elasticsearch.sh kill-node I         kill node I (1..N) at once, as a crash would (drills, tests)
#   scripts/elasticsearch.sh start-node I        start node I again on its data folder and ports
#   scripts/elasticsearch.sh status              the cluster's health and nodes
#
# DISPO_ES_NODES=N (default 1) starts N nodes forming one cluster, each with its own data folder and ports;
# DISPO_ES_URL is then every node's URL, comma-separated. DISPO_ES_HEAP sets each node's heap (default 512m).
#
# The distribution is the server-core "integ-test-zip" published on Maven Central: it has no
# analysis-common, painless, reindex or parent-join module, which is exactly the feature subset the
# project is designed for (and the one docker-compose.yml pins for production).
set -euo pipefail

ES_VERSION="${DISPO_ES_VERSION:-8.19.8}"
ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:${ES_VERSION}:zip"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${DISPO_CACHE_DIR:-$ROOT/.cache}/elasticsearch"
ZIP="$CACHE_DIR/elasticsearch-${ES_VERSION}.zip"
STATE_FILE="${DISPO_ES_STATE:-$ROOT/.cache/es-node.env}"
ES_USER="${DISPO_ES_USER:-dispo-es}"
HEAP="${DISPO_ES_HEAP:-512m}"
NODES="${DISPO_ES_NODES:-1}"

log() { printf '[elasticsearch] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=scripts/servers.sh
. "$ROOT/scripts/servers.sh"

find_java17() {
  if [ -n "${ES_JAVA_HOME:-}" ] && "$ES_JAVA_HOME/bin/java" -version 2>&1 | grep -q 'version "17'; then
    echo "$ES_JAVA_HOME"; return 0
  fi
  for d in /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-arm64 /usr/lib/jvm/java-17-openjdk /usr/lib/jvm/temurin-17-jdk* /usr/lib/jvm/*17*; do
    if [ -x "$d/bin/java" ] && "$d/bin/java" -version 2>&1 | grep -q 'version "17'; then echo "$d"; return 0; fi
  done
  return 1
}

install_prerequisites() {
  # Java 17 and Maven come from the distribution's packages when missing (only possible as root).
  local need=()
  find_java17 >/dev/null || need+=(openjdk-17-jdk-headless)
  command -v mvn >/dev/null || need+=(maven)
  command -v unzip >/dev/null || need+=(unzip)
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    die "missing ${need[*]}: install Java 17, Maven and unzip, or point DISPO_ES_URL at a running cluster"
  fi
}

fetch_distribution() { fetch_from_maven "$ARTIFACT" "$CACHE_DIR" "$ZIP"; }

run_as_es_user() { as_user "$ES_USER" "$@"; }  # Elasticsearch refuses to run as root

start_node() {
  # Node $1 of the cluster recorded in $STATE_FILE's work folder, on the ports and data folder chosen at `start`.
  local i="$1" node_env
  # shellcheck disable=SC1090
  . "$STATE_FILE"
  node_env="$ES_WORK/node-$i/env"
  [ -f "$node_env" ] || die "no node $i in $ES_WORK"
  # shellcheck disable=SC1090
  . "$node_env"
  local discovery=(-E discovery.type=single-node)
  if [ "$ES_NODES" -gt 1 ]; then
    discovery=(-E cluster.name="$ES_CLUSTER" -E node.name="node-$i" -E discovery.seed_hosts="$ES_SEEDS"
      -E cluster.initial_master_nodes="$ES_MASTERS")
  fi
  if ! run_as_es_user env ES_JAVA_HOME="$ES_JAVA" ES_JAVA_OPTS="-Xms$HEAP -Xmx$HEAP" \
      "$ES_WORK/elasticsearch-${ES_VERSION}/bin/elasticsearch" -d -p "$ES_WORK/node-$i/pid" "${discovery[@]}" \
      -E xpack.security.enabled=false -E network.host=127.0.0.1 \
      -E http.port="$NODE_HTTP" -E transport.port="$NODE_TRANSPORT" \
      -E path.data="$ES_WORK/node-$i/data" -E path.logs="$ES_WORK/node-$i/logs" \
      -E cluster.routing.allocation.disk.threshold_enabled=false \
      -E action.destructive_requires_name=false >"$ES_WORK/node-$i/stdout" 2>&1; then
    tail -n 30 "$ES_WORK/node-$i/stdout" >&2 || true
    die "node $i did not start; logs in $ES_WORK/node-$i/logs"
  fi
}

wait_for_cluster() {
  # Until every node has joined and the cluster is at least yellow (green needs every replica placed).
  local url="$1" want="$2" deadline=$((SECONDS + 180)) health=""
  until health="$(curl -fsS "$url/_cluster/health?wait_for_status=yellow&wait_for_nodes=$want&timeout=5s" 2>/dev/null)"; do
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$ES_WORK"/node-*/logs/*.log >&2 || true; die "no healthy cluster of $want node(s) after 180 s"; }
    sleep 1
  done
  echo "$health"
}

start() {
  [[ "$NODES" =~ ^[1-9]$ ]] || die "DISPO_ES_NODES must be 1 to 9, not $NODES"
  install_prerequisites
  local java_home; java_home="$(find_java17)" || die "Java 17 not found"
  fetch_distribution
  local work; work="$(mktemp -d /tmp/dispo-es.XXXXXX)"
  chmod 755 "$work"
  unzip -q "$ZIP" -d "$work"
  local http=() transport=() used=" " port i
  for ((i = 1; i <= NODES; i++)); do
    for kind in http transport; do
      port="$(free_port)"
      while [[ "$used" == *" $port "* ]]; do port="$(free_port)"; done
      used+="$port "
      if [ "$kind" = http ]; then http+=("$port"); else transport+=("$port"); fi
    done
  done
  local seeds="" masters="" urls=""
  for ((i = 1; i <= NODES; i++)); do
    seeds+="${seeds:+,}127.0.0.1:${transport[$((i - 1))]}"
    masters+="${masters:+,}node-$i"
    urls+="${urls:+,}http://127.0.0.1:${http[$((i - 1))]}"
  done
  mkdir -p "$(dirname "$STATE_FILE")"
  printf 'ES_WORK=%q\nES_URL=%q\nES_NODES=%q\nES_CLUSTER=%q\nES_SEEDS=%q\nES_MASTERS=%q\nES_JAVA=%q\n' \
    "$work" "$urls" "$NODES" "dispo-$(basename "$work" | cut -d. -f2)" "$seeds" "$masters" "$java_home" >"$STATE_FILE"
  for ((i = 1; i <= NODES; i++)); do
    mkdir -p "$work/node-$i/data" "$work/node-$i/logs"
    printf 'NODE_HTTP=%q\nNODE_TRANSPORT=%q\n' "${http[$((i - 1))]}" "${transport[$((i - 1))]}" >"$work/node-$i/env"
  done
  [ "$(id -u)" = 0 ] && { id "$ES_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$ES_USER"; chown -R "$ES_USER" "$work"; }
  log "starting Elasticsearch $ES_VERSION, $NODES node(s) on $urls (java: $java_home, heap $HEAP each)"
  for ((i = 1; i <= NODES; i++)); do start_node "$i"; done
  local first="http://127.0.0.1:${http[0]}" health version
  health="$(wait_for_cluster "$first" "$NODES")"
  version="$(curl -fsS "$first/_nodes/_local?filter_path=nodes.*.version" | python3 -c 'import json,sys; print(next(iter(json.load(sys.stdin)["nodes"].values()))["version"])')"
  printf 'ES_VERSION_RUNNING=%q\n' "$version" >>"$STATE_FILE"
  log "Elasticsearch $version ready at $urls (health: $(echo "$health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])'))"
  echo "$urls"
}

node_pid() {
  local pid_file="$ES_WORK/node-$1/pid"
  [ -s "$pid_file" ] && cat "$pid_file"
}

kill_node() {
  [ -f "$STATE_FILE" ] || die "no cluster recorded in $STATE_FILE"
  # shellcheck disable=SC1090
  . "$STATE_FILE"
  local pid; pid="$(node_pid "$1")" || die "node $1 is not running"
  kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  rm -f "$ES_WORK/node-$1/pid"
  log "node $1 killed (pid $pid)"
}

restart_node() {
  [ -f "$STATE_FILE" ] || die "no cluster recorded in $STATE_FILE"
  # shellcheck disable=SC1090
  . "$STATE_FILE"
  if pid="$(node_pid "$1")" && kill -0 "$pid" 2>/dev/null; then log "node $1 is running (pid $pid)"; return 0; fi
  start_node "$1"
  wait_for_cluster "${ES_URL%%,*}" "$ES_NODES" >/dev/null
  log "node $1 is back"
}

status() {
  [ -f "$STATE_FILE" ] || die "no cluster recorded in $STATE_FILE"
  # shellcheck disable=SC1090
  . "$STATE_FILE"
  local url
  for url in ${ES_URL//,/ }; do
    if curl -fsS "$url/_cat/health?v" 2>/dev/null && curl -fsS "$url/_cat/nodes?v&h=name,http_address,master,heap.percent"; then
      return 0
    fi
  done
  die "no node of $ES_URL answers"
}

stop() {
  [ -f "$STATE_FILE" ] || { log "no node recorded in $STATE_FILE"; return 0; }
  # shellcheck disable=SC1090
  . "$STATE_FILE"
  local pids=() pid i
  for ((i = 1; i <= ${ES_NODES:-1}; i++)); do
    if pid="$(node_pid "$i")"; then pids+=("$pid"); kill "$pid" 2>/dev/null || true; fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$ES_WORK" "$STATE_FILE"
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  kill-node) kill_node "${2:?node number}" ;;
  start-node) restart_node "${2:?node number}" ;;
  status) status ;;
  run)
    shift; [ "${1:-}" = "--" ] && shift
    if [ -n "${DISPO_ES_URL:-}" ]; then
      log "using the cluster at DISPO_ES_URL=$DISPO_ES_URL"
      exec "$@"
    fi
    url="$(start | tail -n 1)"
    trap stop EXIT
    export DISPO_ES_URL="$url"
    "$@"
    ;;
  *) echo "usage: $0 start|stop|status|kill-node I|start-node I|run -- COMMAND..." >&2; exit 2 ;;
esac
