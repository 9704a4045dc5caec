#!/usr/bin/env bash
# The test command: set up (venv, dev extras, mosquitto) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
export PATH="/usr/sbin:$PATH"  # mosquitto lives in /usr/sbin on Debian
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
