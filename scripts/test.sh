#!/usr/bin/env bash
# README command 2: install test dependencies and run every test (lint included).
# Starts the real PostgreSQL when it is down; installs it and Mosquitto on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

ensure_services() {
  if ! command -v mosquitto >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "[test] installing postgresql and mosquitto"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql mosquitto >/dev/null
    fi
  fi
  if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    echo "[test] starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  # no shared Mosquitto is started: tests/conftest.py runs a private one per run (authentication and TLS on)
  for _ in $(seq 1 30); do
    pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && break
    sleep 1
  done
}

ensure_services

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

echo "[test] ruff"
.venv/bin/ruff check osos tests bench
echo "[test] pytest"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
# pytest's 5 means "no tests collected": that is a failure here, never a silent pass.
exit $rc
