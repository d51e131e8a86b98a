#!/usr/bin/env bash
# Provision and run a throwaway Keycloak, the OpenID Connect provider standing in for Pro Santé Connect in tests and
# the demo: Keycloak's Quarkus distribution from Maven Central, on a Java it supports (21 or later), bound to
# 127.0.0.1 on free ports, with its own folder, as an unprivileged user, the realm of `scripts/keycloak/` imported.
#
#   scripts/keycloak.sh run -- COMMAND...   start, run COMMAND with DISPO_OIDC_ISSUER set, stop
#   scripts/keycloak.sh start               start in the background, print the realm's issuer URL
#   scripts/keycloak.sh stop                stop what `start` started, and remove its folder
#
# DISPO_KEYCLOAK_STATE names the state file (default .cache/keycloak.env). When DISPO_OIDC_ISSUER is set, `run` uses
# that provider and starts none.
set -euo pipefail

KC_VERSION="${DISPO_KEYCLOAK_VERSION:-26.4.7}"
ARTIFACT="org.keycloak:keycloak-quarkus-dist:${KC_VERSION}:zip"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${DISPO_CACHE_DIR:-$ROOT/.cache}/keycloak"
ZIP="$CACHE_DIR/keycloak-quarkus-dist-${KC_VERSION}.zip"
STATE_FILE="${DISPO_KEYCLOAK_STATE:-$ROOT/.cache/keycloak.env}"
KC_USER="${DISPO_KEYCLOAK_USER:-dispo-kc}"
REALM_FILE="$ROOT/scripts/keycloak/dispo-realm.json"

log() { printf '[keycloak] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=scripts/servers.sh
. "$ROOT/scripts/servers.sh"

find_java() {
  # Keycloak 26 needs Java 21 or later: the newest found under /usr/lib/jvm, or KC_JAVA_HOME.
  local d v
  for d in ${KC_JAVA_HOME:-} /usr/lib/jvm/*; do
    [ -x "$d/bin/java" ] || continue
    v="$("$d/bin/java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)"
    if [ -n "$v" ] && [ "$v" -ge 21 ]; then echo "$d"; return 0; fi
  done
  return 1
}

fetch_distribution() { fetch_from_maven "$ARTIFACT" "$CACHE_DIR" "$ZIP"; }

start() {
  [ -f "$STATE_FILE" ] && die "a provider is already recorded in $STATE_FILE: stop it first"
  local java
  java="$(find_java)" || die "no Java 21 or later under /usr/lib/jvm (Keycloak needs one): install one, or set KC_JAVA_HOME"
  command -v unzip >/dev/null || die "unzip is needed"
  fetch_distribution
  KC_WORK="$(mktemp -d /tmp/dispo-keycloak.XXXXXX)"
  unzip -q "$ZIP" -d "$KC_WORK"
  KC_HOME="$KC_WORK/keycloak-$KC_VERSION"
  mkdir -p "$KC_HOME/data/import"
  cp "$REALM_FILE" "$KC_HOME/data/import/"
  if [ "$(id -u)" = 0 ]; then
    id "$KC_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$KC_USER"
    chown -R "$KC_USER" "$KC_WORK"  # the server writes in its own folder only
  fi
  chmod 755 "$KC_WORK"
  KC_PORT="$(free_port)"; KC_MANAGEMENT_PORT="$(free_port)"
  log "starting Keycloak $KC_VERSION on 127.0.0.1:$KC_PORT (java: $java)"
  # The bootstrap administrator exists only in this throwaway instance (loopback, its own folder).
  as_user "$KC_USER" env JAVA_HOME="$java" KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD=admin \
    setsid "$KC_HOME/bin/kc.sh" start-dev --http-host=127.0.0.1 --http-port="$KC_PORT" \
    --http-management-port="$KC_MANAGEMENT_PORT" --import-realm >"$KC_WORK/server.out" 2>&1 &
  KC_PID=$!  # the launcher: it lives as long as the server does
  ISSUER="http://127.0.0.1:$KC_PORT/realms/dispo"
  mkdir -p "$(dirname "$STATE_FILE")"
  printf 'KC_WORK=%s\nKC_PORT=%s\nISSUER=%s\n' "$KC_WORK" "$KC_PORT" "$ISSUER" >"$STATE_FILE"
  for _ in $(seq 1 180); do
    kill -0 "$KC_PID" 2>/dev/null || { tail -n 30 "$KC_WORK/server.out" >&2; stop >/dev/null 2>&1; die "Keycloak exited while starting"; }
    if curl -sf "$ISSUER/.well-known/openid-configuration" >/dev/null 2>&1; then
      log "ready: $ISSUER"
      echo "$ISSUER"
      return 0
    fi
    sleep 1
  done
  tail -n 30 "$KC_WORK/server.out" >&2
  stop >/dev/null 2>&1
  die "Keycloak did not become ready within 180 s"
}

server_pids() {
  # The server's JVM (started under runuser, in a session of its own) is told apart by its home folder.
  pgrep -f -- "-Dkc.home.dir=$KC_WORK/" || true
}

stop() {
  [ -f "$STATE_FILE" ] || { log "nothing to stop"; return 0; }
  # shellcheck disable=SC1090
  . "$STATE_FILE"
  # shellcheck disable=SC2046
  stop_pids $(server_pids)
  rm -rf "$KC_WORK" "$STATE_FILE"
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  run)
    shift; [ "${1:-}" = "--" ] && shift
    if [ -n "${DISPO_OIDC_ISSUER:-}" ]; then
      log "using the provider at DISPO_OIDC_ISSUER=$DISPO_OIDC_ISSUER"
      exec "$@"
    fi
    issuer="$(start | tail -n 1)"
    trap '"$0" stop' EXIT
    export DISPO_OIDC_ISSUER="$issuer"
    "$@"
    ;;
  *) echo "usage: $0 start|stop|run -- COMMAND..." >&2; exit 2 ;;
esac
