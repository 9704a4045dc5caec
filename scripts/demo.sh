#!/usr/bin/env bash
# The main job on a fresh machine, in one command: install the device runtime into .venv
# (no TensorFlow), then `smartbin demo`: an MQTT broker on 127.0.0.1:1883 (a broker already
# listening there, else mosquitto when installed, else the embedded Python broker), the
# daemon on the bundled sample clip with the shipped model, each event and counts update as
# it arrives, and a summary. Exit 0 when every event the bin produced was delivered.
# Arguments go to `smartbin demo` (e.g. --port 1884, --broker embedded, --log-level INFO).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh device
export PATH="$PATH:/usr/sbin"  # Debian's mosquitto lives in /usr/sbin
exec .venv/bin/smartbin demo "$@"
