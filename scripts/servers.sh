# Shared by the scripts that start the project's throwaway servers (elasticsearch.sh, rabbitmq.sh, keycloak.sh):
# sourced, after each has defined `log` and `die`.

DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# fetch_from_maven ARTIFACT DIR FILE: FILE (in DIR) fetched from Maven Central once, then reused.
fetch_from_maven() {
  local artifact="$1" dir="$2" file="$3"
  if [ -s "$file" ]; then log "using cached $(basename "$file")"; return 0; fi
  command -v mvn >/dev/null || die "Maven is needed to fetch $artifact (apt-get install maven)"
  mkdir -p "$dir"
  log "fetching $artifact from Maven Central"
  mvn -B -q "$DEP_PLUGIN:copy" -Dartifact="$artifact" -DoutputDirectory="$dir" >&2 \
    || die "maven could not fetch $artifact (check network access to Maven Central)"
  [ -s "$file" ] || die "maven finished but $file is missing"
}

# as_user USER COMMAND...: the command as a dedicated system user (made when missing) when we are root; as
# ourselves otherwise. The servers refuse to run as root, or should not.
as_user() {
  local user="$1"; shift
  if [ "$(id -u)" = 0 ]; then
    id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
    runuser -u "$user" -- "$@"
  else
    "$@"
  fi
}

# stop_pids PID...: asked to stop, waited for (up to 30 s), then killed.
stop_pids() {
  local alive pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 30); do
    alive=0
    for pid in "$@"; do if kill -0 "$pid" 2>/dev/null; then alive=1; fi; done
    [ "$alive" = 0 ] && break
    sleep 1
  done
  for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
}
