#!/usr/bin/env bash
# `make demo`: load the sample national files into the embedded index, start three sandbox vendors and
# the slot scheduler, and serve the API.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${VENV:-.venv}/bin"
export DISPO_BACKEND=sqlite
export DISPO_DATA_DIR="${DISPO_DATA_DIR:-$ROOT/.dispo/demo}"
export DISPO_TOKENS_FILE="$DISPO_DATA_DIR/tokens"
export COLUMNS="${COLUMNS:-160}"
export DISPO_AGGREGATION_INTERVAL_S="${DISPO_AGGREGATION_INTERVAL_S:-60}"
# Coverage snapshots every 2 minutes, so the analysts' chart fills while the demo runs.
export DISPO_COVERAGE_INTERVAL_S="${DISPO_COVERAGE_INTERVAL_S:-120}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT="${DISPO_PORT:-$(free_port)}"
URL="http://127.0.0.1:$PORT"
SANDBOX_PORT="${DISPO_SANDBOX_PORT:-$(free_port)}"

# The FINESS sample: from the shared data folder when present, else the copy shipped here.
SHARED="$(cd "${SHARED_DATA:-$ROOT/../shared/data}" 2>/dev/null && pwd || echo /nonexistent)"
if [ -f "$SHARED/finess/etalab_flat_sample_dep01_20201231.csv" ]; then
  FINESS="$SHARED/finess/etalab_flat_sample_dep01_20201231.csv"
else
  FINESS="data/samples/etalab_flat_sample_dep01_20201231.csv"
fi

rm -rf "$DISPO_DATA_DIR"
mkdir -p "$DISPO_DATA_DIR"
TOKEN="$("$BIN/dispo" tokens create --role regulator --label demo-regulator 2>/dev/null)"
MAINTAINER="$("$BIN/dispo" tokens create --role maintainer --label demo-maintainer 2>/dev/null)"
ANALYST="$("$BIN/dispo" tokens create --role analyst --label demo-analyst 2>/dev/null)"
echo "$ANALYST" >"$DISPO_DATA_DIR/analyst.token"
echo "$TOKEN" >"$DISPO_DATA_DIR/regulator.token"
# Each sandbox vendor reports bookings back with its own vendor token (the token's label is the vendor id).
for v in sandbox-a sandbox-b sandbox-c; do
  echo "$v:$("$BIN/dispo" tokens create --role vendor --label "$v" 2>/dev/null)" >>"$DISPO_DATA_DIR/vendor.tokens"
done
echo "$MAINTAINER" >"$DISPO_DATA_DIR/maintainer.token"

# The real samples plus a generated Ain (01) directory in the same format, so that searches have doctors.
"$BIN/dispo" generate --out "$DISPO_DATA_DIR/generated" --scale department --seed 1 --vendors 3
GENERATED_RPPS="$DISPO_DATA_DIR/generated/PS_LibreAcces_Personne_activite_department_1.txt"
PARTICIPATIONS="$DISPO_DATA_DIR/generated/participations_department_1.csv"
"$BIN/dispo" import finess "$FINESS"
"$BIN/dispo" import rpps "$GENERATED_RPPS"

children=()
stop_broker() { :; }
stop_provider() { :; }
cleanup() { for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done; stop_broker; stop_provider; }
trap cleanup EXIT INT TERM

# Three sandbox vendors serve the participants and register themselves; the participation list is loaded.
"$BIN/dispo" sandbox --vendors 3 --sos --port "$SANDBOX_PORT" --latency-ms 250 --participations "$PARTICIPATIONS" \
  --platform-url "http://127.0.0.1:$PORT/fhir" --platform-tokens "$DISPO_DATA_DIR/vendor.tokens" &
children+=($!)
for _ in $(seq 1 100); do
  n="$("$BIN/dispo" index status --json 2>/dev/null | python3 -c '
import json, sys
indices = json.load(sys.stdin)["indices"]
print(indices["vendors"]["documents"] >= 3 and indices["participations"]["documents"] > 0)' 2>/dev/null || echo False)"
  [ "$n" = True ] && break
  sleep 0.2
done
# The next day's extraction of the Ain arrives: practitioners added, removed (some taking part in the SAS), moved and
# with another specialty. Its import compares it with the live version and prints what changed, the SAS alerts first.
"$BIN/dispo" generate --next-of "$GENERATED_RPPS" --out "$DISPO_DATA_DIR/generated" --seed 1 --changes 20
"$BIN/dispo" import rpps "$DISPO_DATA_DIR/generated/PS_LibreAcces_Personne_activite_department_1_next.txt"
# A general practitioner of the Ain without booking software keeps a SAS calendar in Dispo: regulators book its slots
# on the page itself (no vendor's page).
DEMO_GP="$("$BIN/dispo" sites --postcode 01000 --radius 15 --specialty SM54 --json | python3 -c '
import csv, json, sys
taking_part = {row["idnps"] for row in csv.DictReader(open(sys.argv[1], encoding="utf-8"))}
hits = json.load(sys.stdin)["results"]
print(next(h["site"]["practitioner"]["idnps"] for h in hits if h["site"]["practitioner"]["idnps"] not in taking_part))
' "$PARTICIPATIONS")"
"$BIN/dispo" calendar set "$DEMO_GP" --hours 08:00-12:00 --hours 14:00-19:00 --minutes 20
"$BIN/dispo" aggregate --once   # then a first coverage snapshot for the analysts' page
"$BIN/dispo" aggregate >"$DISPO_DATA_DIR/aggregate.log" 2>&1 &
children+=($!)

# Appointments go to the SAMU's regulation software through a broker standing in for the Hub Santé: the one named by
# DISPO_AMQP_URL, else one of the demo's own when the distribution's rabbitmq-server is installed; else it is off.
if [ -z "${DISPO_AMQP_URL:-}" ] && { command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; }; then
  export DISPO_RABBITMQ_STATE="$DISPO_DATA_DIR/rabbitmq.env"
  if DISPO_AMQP_URL="$(bash scripts/rabbitmq.sh start | tail -n 1)"; then
    export DISPO_AMQP_URL
    stop_broker() { DISPO_RABBITMQ_STATE="$DISPO_DATA_DIR/rabbitmq.env" bash "$ROOT/scripts/rabbitmq.sh" stop || true; }
  else
    unset DISPO_AMQP_URL
  fi
fi
if [ -n "${DISPO_AMQP_URL:-}" ]; then
  export DISPO_LRM_DECLARE_HUB=1
  "$BIN/dispo" lrm-sandbox --samu fr.health.samu010 >"$DISPO_DATA_DIR/lrm-sandbox.log" 2>&1 &
  children+=($!)
  "$BIN/dispo" lrm run >"$DISPO_DATA_DIR/lrm.log" 2>&1 &
  children+=($!)
  LRM="on: bookings of the Ain go to the SAMU sandbox fr.health.samu010 (log: $DISPO_DATA_DIR/lrm.log)"
else
  LRM="off: no broker (install rabbitmq-server, or set DISPO_AMQP_URL); appointments wait in their outbox"
fi

# People sign in through a provider standing in for Pro Santé Connect: the one named by DISPO_OIDC_ISSUER, else a
# Keycloak of the demo's own (scripts/keycloak.sh: a Java 21 or later is needed); else the pages take tokens.
if [ -z "${DISPO_OIDC_ISSUER:-}" ]; then
  export DISPO_KEYCLOAK_STATE="$DISPO_DATA_DIR/keycloak.env"
  echo "starting the sign-in provider (Keycloak, about a minute; log: $DISPO_DATA_DIR/keycloak.log)" >&2
  if DISPO_OIDC_ISSUER="$(bash scripts/keycloak.sh start 2>"$DISPO_DATA_DIR/keycloak.log" | tail -n 1)" \
      && [ -n "$DISPO_OIDC_ISSUER" ]; then
    export DISPO_OIDC_ISSUER DISPO_OIDC_CLIENT_SECRET="${DISPO_OIDC_CLIENT_SECRET:-dispo-test-secret}"
    stop_provider() { DISPO_KEYCLOAK_STATE="$DISPO_DATA_DIR/keycloak.env" bash "$ROOT/scripts/keycloak.sh" stop || true; }
  else
    unset DISPO_OIDC_ISSUER
  fi
fi
if [ -n "${DISPO_OIDC_ISSUER:-}" ]; then
  # The accounts of the realm's people (scripts/keycloak/dispo-realm.json), with their roles in Dispo.
  "$BIN/dispo" accounts create 810100050075 --idnps --name "Pauline RICART" >/dev/null
  "$BIN/dispo" accounts grant 810100050075 regulator -t 01 >/dev/null
  # The realm's `medecin` is the demo's general practitioner with a SAS calendar (known by the provider's subject).
  "$BIN/dispo" accounts create "$DEMO_GP" --idnps --subject 5d1f6a0e-3c2b-4f7e-9a51-2b8c7d4e6f10 --name "Médecin du SAS" >/dev/null
  "$BIN/dispo" accounts grant "$DEMO_GP" effecteur >/dev/null
  "$BIN/dispo" accounts create sas-analyste --subject ced3d484-c8a5-4f5d-a1a7-474546721e50 --name "Camille ANALYSTE" >/dev/null
  "$BIN/dispo" accounts grant sas-analyste analyst >/dev/null
  "$BIN/dispo" accounts create sas-admin01 --subject 0b568cbc-d7e9-43e2-a870-624326470503 --name "Alex ADMIN" >/dev/null
  "$BIN/dispo" accounts grant sas-admin01 territorial_admin -t 01 >/dev/null
  # The realm's `structure` manages the demo's SOS Médecins association (3 + its SIRET).
  "$BIN/dispo" accounts create sas-structure --subject 6e0f5a43-9b1c-4d2e-8f37-a1c2d3e4f506 --name "Dominique GESTIONNAIRE" >/dev/null
  "$BIN/dispo" accounts grant sas-structure structure_manager -s 330000000100012 >/dev/null
  SIGNIN="on: Pro Santé Connect stand-in at $DISPO_OIDC_ISSUER
                   regulateur/regulateur (regulator, SAS 01), medecin/medecin (a GP with a SAS calendar: $URL/espace),
                   analyste/analyste, admin01/admin01 (territorial admin),
                   structure/structure (the demo's SOS Médecins association: $URL/structures)"
else
  SIGNIN="off: no provider (a Java 21+ under /usr/lib/jvm lets the demo start Keycloak, or set DISPO_OIDC_ISSUER);
                   the pages take the tokens below (see $DISPO_DATA_DIR/keycloak.log)"
fi

cat <<MSG

Dispo demo: embedded index in $DISPO_DATA_DIR
  Page             $URL/   ("Se connecter avec Pro Santé Connect"), or $URL/#token=$TOKEN
  Practitioners    $URL/espace   (participation, SAS calendar, periods away; $DEMO_GP keeps a SAS calendar)
  Structures       $URL/structures   (a CPTS's members; an SOS Médecins association's participation and places)
  Imports          $URL/imports#token=$MAINTAINER   (the change report between two extractions of the Ain, SAS alerts first)
  Analysts' page   $URL/analysts   (coverage map, chart, tables, exports), or $URL/analysts#token=$ANALYST
  sign-in          $SIGNIN
  API              $URL   (OpenAPI docs: $URL/docs)
  regulator token  $TOKEN
  maintainer token $MAINTAINER
  analyst token    $ANALYST
  vendors          3 sandboxes from port $SANDBOX_PORT; slots pulled every $DISPO_AGGREGATION_INTERVAL_S s
                   (log: $DISPO_DATA_DIR/aggregate.log)
  to the SAMU      $LRM

Try:
  curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/search?address=12%20rue%20de%20la%20R%C3%A9publique%2001000%20Bourg-en-Bresse"
  curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/search?department=01&modality=home"
  curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/search?postcode=01000&via=sos"        # SOS Médecins places
  curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/search?postcode=01000&via=cpts&slot_type=CPTS"   # via a CPTS
  curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/practice-sites/search?postcode=01000&radius_km=20"
  DISPO_DATA_DIR=$DISPO_DATA_DIR $BIN/dispo search --address "Belley"
Book: take a slot_id from a search, then
  curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
       -d '{"slot_id": "<slot_id>"}' "$URL/v1/bookings"        # -> booking_url with origin=sas
  open the booking_url, choose the regulator, "Réserver": the vendor reports the appointment back
  curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/appointments"          # with where its transmission to the SAMU stands
  DISPO_DATA_DIR=$DISPO_DATA_DIR $BIN/dispo lrm status
  curl -s -H "Authorization: Bearer $MAINTAINER" "$URL/metrics"
  DISPO_DATA_DIR=$DISPO_DATA_DIR $BIN/dispo vendors status
Coverage (analysts):
  DISPO_DATA_DIR=$DISPO_DATA_DIR $BIN/dispo coverage show --level department
  DISPO_DATA_DIR=$DISPO_DATA_DIR $BIN/dispo coverage map --out coverage.png
  DISPO_DATA_DIR=$DISPO_DATA_DIR $BIN/dispo coverage export --out coverage-exports

Ctrl-C stops the demo.
MSG
"$BIN/dispo" serve --host 127.0.0.1 --port "$PORT"
