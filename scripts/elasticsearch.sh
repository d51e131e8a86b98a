#!/usr/bin/env bash
# Provision and run a throwaway single-node Elasticsearch for the test suite.
#
#   scripts/elasticsearch.sh run -- COMMAND...   start a node, run COMMAND with DISPO_ES_URL set, stop the node
#   scripts/elasticsearch.sh start               start a node in the background, print its URL
#   scripts/elasticsearch.sh stop                stop the node started by `start`
#
# The distribution is the server-core "integ-test-zip" published on Maven Central: it has no
# analysis-common, painless, reindex or parent-join module, which is exactly the feature subset the
# project is designed for (and the one docker-compose.yml pins for production).
set -euo pipefail

ES_VERSION="${DISPO_ES_VERSION:-8.19.8}"
ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:${ES_VERSION}:zip"
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${DISPO_CACHE_DIR:-$ROOT/.cache}/elasticsearch"
ZIP="$CACHE_DIR/elasticsearch-${ES_VERSION}.zip"
STATE_FILE="${DISPO_ES_STATE:-$ROOT/.cache/es-node.env}"
ES_USER="${DISPO_ES_USER:-dispo-es}"
HEAP="${DISPO_ES_HEAP:-512m}"

log() { printf '[elasticsearch] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

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

fetch_distribution() {
  if [ -s "$ZIP" ]; then log "using cached $(basename "$ZIP")"; return 0; fi
  mkdir -p "$CACHE_DIR"
  log "fetching $ARTIFACT from Maven Central"
  mvn -B -q "$DEP_PLUGIN:copy" -Dartifact="$ARTIFACT" -DoutputDirectory="$CACHE_DIR" >&2 \
    || die "maven could not fetch $ARTIFACT (check network access to Maven Central)"
  [ -s "$ZIP" ] || die "maven finished but $ZIP is missing"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

run_as_es_user() {
  # Elasticsearch refuses to run as root: use a dedicated system user when we are root.
  if [ "$(id -u)" = 0 ]; then
    id "$ES_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$ES_USER"
    runuser -u "$ES_USER" -- "$@"
  else
    "$@"
  fi
}

start() {
  install_prerequisites
  local java_home; java_home="$(find_java17)" || die "Java 17 not found"
  fetch_distribution
  local work; work="$(mktemp -d /tmp/dispo-es.XXXXXX)"
  chmod 755 "$work"
  unzip -q "$ZIP" -d "$work"
  local home="$work/elasticsearch-${ES_VERSION}"
  mkdir -p "$work/data" "$work/logs" "$work/run"
  [ "$(id -u)" = 0 ] && { id "$ES_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$ES_USER"; chown -R "$ES_USER" "$work"; }
  local http_port transport_port
  http_port="$(free_port)"; transport_port="$(free_port)"
  while [ "$transport_port" = "$http_port" ]; do transport_port="$(free_port)"; done
  log "starting Elasticsearch $ES_VERSION on 127.0.0.1:$http_port (java: $java_home)"
  if ! run_as_es_user env ES_JAVA_HOME="$java_home" ES_JAVA_OPTS="-Xms$HEAP -Xmx$HEAP" \
      "$home/bin/elasticsearch" -d -p "$work/run/pid" \
      -E discovery.type=single-node -E xpack.security.enabled=false -E network.host=127.0.0.1 \
      -E http.port="$http_port" -E transport.port="$transport_port" \
      -E path.data="$work/data" -E path.logs="$work/logs" \
      -E cluster.routing.allocation.disk.threshold_enabled=false \
      -E action.destructive_requires_name=false >"$work/run/stdout" 2>&1; then
    tail -n 30 "$work/run/stdout" >&2 || true
    die "Elasticsearch did not start; logs in $work/logs"
  fi
  local url="http://127.0.0.1:$http_port"
  local deadline=$((SECONDS + 120)) health=""
  until health="$(curl -fsS "$url/_cluster/health?wait_for_status=yellow&timeout=5s" 2>/dev/null)"; do
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$work/logs/"*.log >&2 || true; die "no healthy cluster after 120 s"; }
    sleep 1
  done
  local version
  version="$(curl -fsS "$url/_nodes/_local?filter_path=nodes.*.version" | python3 -c 'import json,sys; print(next(iter(json.load(sys.stdin)["nodes"].values()))["version"])')"
  mkdir -p "$(dirname "$STATE_FILE")"
  printf 'ES_WORK=%q\nES_URL=%q\nES_VERSION_RUNNING=%q\n' "$work" "$url" "$version" >"$STATE_FILE"
  log "Elasticsearch $version ready at $url (health: $(echo "$health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])'))"
  echo "$url"
}

stop() {
  [ -f "$STATE_FILE" ] || { log "no node recorded in $STATE_FILE"; return 0; }
  # shellcheck disable=SC1090
  . "$STATE_FILE"
  if [ -f "$ES_WORK/run/pid" ]; then
    local pid; pid="$(cat "$ES_WORK/run/pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$ES_WORK" "$STATE_FILE"
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
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
  *) echo "usage: $0 start|stop|run -- COMMAND..." >&2; exit 2 ;;
esac
