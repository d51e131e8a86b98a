#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (never a browser downloaded by a test tool): install it when
# it is missing and we may (root with apt-get); otherwise say how, and the browser tests skip (or fail
# with DISPO_REQUIRE_BROWSER=1).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[chromium] installing Debian's chromium package" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "[chromium] not installed: run 'apt-get install chromium' as root for the browser tests" >&2
fi
