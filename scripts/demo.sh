#!/usr/bin/env bash
# `make demo`: load the sample national files into the embedded index and serve the API.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${VENV:-.venv}/bin"
export DISPO_BACKEND=sqlite
export DISPO_DATA_DIR="${DISPO_DATA_DIR:-$ROOT/.dispo/demo}"
export DISPO_TOKENS_FILE="$DISPO_DATA_DIR/tokens"
PORT="${DISPO_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"

# The national samples: from the shared data folder when present, else the copies shipped here.
SHARED="$(cd "${SHARED_DATA:-$ROOT/../shared/data}" 2>/dev/null && pwd || echo /nonexistent)"
if [ -f "$SHARED/rpps/PS_LibreAcces_Personne_activite_sample.txt" ]; then
  RPPS="$SHARED/rpps/PS_LibreAcces_Personne_activite_sample.txt"
  FINESS="$SHARED/finess/etalab_flat_sample_dep01_20201231.csv"
else
  RPPS="data/samples/PS_LibreAcces_Personne_activite_sample.txt"
  FINESS="data/samples/etalab_flat_sample_dep01_20201231.csv"
fi

rm -rf "$DISPO_DATA_DIR"
mkdir -p "$DISPO_DATA_DIR"
TOKEN="$("$BIN/dispo" tokens create --role regulator --label demo-regulator 2>/dev/null)"
"$BIN/dispo" tokens create --role maintainer --label demo-maintainer >"$DISPO_DATA_DIR/maintainer.token" 2>/dev/null
"$BIN/dispo" tokens create --role analyst --label demo-analyst >"$DISPO_DATA_DIR/analyst.token" 2>/dev/null
echo "$TOKEN" >"$DISPO_DATA_DIR/regulator.token"

"$BIN/dispo" import finess "$FINESS"
"$BIN/dispo" import rpps "$RPPS"

URL="http://127.0.0.1:$PORT"
cat <<MSG

Dispo demo: embedded index in $DISPO_DATA_DIR
  API             $URL   (OpenAPI docs: $URL/docs)
  regulator token $TOKEN
  (maintainer and analyst tokens are in $DISPO_DATA_DIR/*.token)

Try:
  curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/practice-sites/search?postcode=01000&radius_km=20"
  curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/practitioners/0019402726"

Ctrl-C stops the demo.
MSG
exec "$BIN/dispo" serve --host 127.0.0.1 --port "$PORT"
