#!/usr/bin/env bash
# README command 1: install OSOS into .venv and run the demo (broker + head-end + web + simulated fleet).
# Extra arguments go to `osos demo` (e.g. --port 8080 --gateways 20).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/osos demo "$@"
