#!/usr/bin/env bash
# Create .venv and install smartbin with the given extras (default: device).
# With the dev extras it also installs the Debian packages the tests need when they are
# missing: mosquitto (a real broker), shellcheck (install.sh is checked), and chromium +
# chromium-driver (the dashboard's page is tested in headless Chromium; Selenium is pointed
# at Debian's chromedriver, it never downloads a browser). The demo needs no Debian
# package: without mosquitto it uses the embedded Python broker.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-device}"

apt_packages=()
if [[ ",$extras," == *,dev,* ]]; then
  if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    apt_packages+=(mosquitto mosquitto-clients)
  fi
  command -v shellcheck >/dev/null 2>&1 || apt_packages+=(shellcheck)
  [ -x /usr/bin/chromium ] || apt_packages+=(chromium)
  [ -x /usr/bin/chromedriver ] || apt_packages+=(chromium-driver)
fi
if [ "${#apt_packages[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing ${apt_packages[*]} (Debian) ..."
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

python=""
for candidate in python3.11 python3.12 python3; do
  if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
done
[ -n "$python" ] || { echo "python3 not found" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${extras}]"
