#!/usr/bin/env bash
# The main job on a fresh machine: install the device runtime (no TensorFlow), start a local
# mosquitto on 127.0.0.1:1883 (unless a broker already listens there), run the daemon on the
# bundled sample clip with the shipped model, and print what it publishes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh device
export PATH="/usr/sbin:$PATH"
host=127.0.0.1 port=1883
workdir="$(mktemp -d)"
broker_pid=""
sub_pid=""
cleanup() {
  [ -n "$sub_pid" ] && kill "$sub_pid" 2>/dev/null || true
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT

if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
  echo "using the MQTT broker already listening on $host:$port"
else
  printf 'listener %s %s\nallow_anonymous true\npersistence false\n' "$port" "$host" \
    >"$workdir/mosquitto.conf"
  chmod 755 "$workdir"; chmod 644 "$workdir/mosquitto.conf"
  mosquitto -c "$workdir/mosquitto.conf" >"$workdir/mosquitto.log" 2>&1 &
  broker_pid=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && break; sleep 0.1; done
  echo "started mosquitto on $host:$port"
fi

mosquitto_sub -h "$host" -p "$port" -v -t 'smartbin/#' &
sub_pid=$!
sleep 0.5
# The clip ends (loop = false): the daemon drains its outbox and exits 0.
.venv/bin/smartbin run --config firmware_config/demo.toml
sleep 1
