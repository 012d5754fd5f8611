#!/usr/bin/env bash
# README command 1: install OSOS into .venv and run the demo (Mosquitto broker with authentication and TLS,
# head-end, web, simulated fleet). Extra arguments go to `osos demo` (e.g. --port 8080 --gateways 20 --no-tls).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# The demo needs Mosquitto 2 with its dynamic-security plugin (per-device accounts and ACLs); there is no embedded
# fallback broker, because it could not refuse anonymous clients.
have_mosquitto() {
  { command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } &&
    ls /usr/lib/*/mosquitto_dynamic_security.so /usr/lib/mosquitto_dynamic_security.so \
       /usr/local/lib/mosquitto_dynamic_security.so 2>/dev/null | grep -q .
}
if ! have_mosquitto; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing mosquitto with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto >/dev/null; }
  else
    echo "error: the demo needs Mosquitto 2 (with mosquitto_dynamic_security.so)." >&2
    echo "  Debian/Ubuntu: sudo apt-get install mosquitto   Fedora: sudo dnf install mosquitto" >&2
    echo "  macOS: brew install mosquitto (then set OSOS_MOSQUITTO_DYNSEC to the plugin's path)" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/osos demo "$@"
