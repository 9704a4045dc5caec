#!/usr/bin/env bash
# Install smartbin as a service on a Raspberry Pi (Raspberry Pi OS Bookworm, Python 3.11).
# Run from a clone of the repository:   sudo bash firmware_config/install.sh [--coral]
#
# Idempotent: every step first looks at what is there and changes only what differs, so a
# second run changes nothing (and an upgrade is: git pull, run it again). An existing
# /etc/smartbin/smartbin.toml is never overwritten.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: install.sh [--prefix DIR] [--config FILE] [--coral] [--no-enable] [--dry-run] [--root DIR]

Installs smartbin as the systemd service 'smartbin':
  apt packages     python3-venv, python3-picamera2 (only those missing)
  program          DIR/.venv (--system-site-packages, for apt's picamera2) with '.[device,pi]'
  user             'smartbin' (system user) in the groups video (+ plugdev with --coral)
  state            /var/lib/smartbin (the outbox), owner smartbin, mode 750
  config           /etc/smartbin/smartbin.toml, copied from FILE only when absent
  unit             /etc/systemd/system/smartbin.service, then daemon-reload and
                   'systemctl enable --now smartbin' (after 'smartbin run --check')

options:
  --prefix DIR     where the venv goes (default /opt/smartbin)
  --config FILE    the config to install when none is there
                   (default: firmware_config/smartbin.toml of this clone; edit it after)
  --coral          also set up a Coral USB Edge TPU: Coral's apt repository and key,
                   libedgetpu1-std, a udev rule for both USB ids of the stick
                   (1a6e:089a, 18d1:9302; group plugdev), 'smartbin' in plugdev
  --no-enable      install everything but do not enable or start the service
  --dry-run        change nothing; print what would be written and run
  --root DIR       write the files under DIR instead of / and print (not run) the
                   commands that change the system (apt, users, pip, systemctl);
                   no root privileges needed (for packaging and tests)
  -h, --help       this help
EOF
}

die() {
  echo "install.sh: error: $*" >&2
  exit 2
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix=/opt/smartbin
config_src="$repo/firmware_config/smartbin.toml"
coral=0
enable=1
dry_run=0
root=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; prefix="$2"; shift 2 ;;
    --config) [ $# -ge 2 ] || die "--config needs a file"; config_src="$2"; shift 2 ;;
    --root) [ $# -ge 2 ] || die "--root needs a folder"; root="$2"; shift 2 ;;
    --coral) coral=1; shift ;;
    --no-enable) enable=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$prefix" in /*) ;; *) die "--prefix must be an absolute path, got '$prefix'" ;; esac
[ -f "$config_src" ] || die "--config: no such file: $config_src"
if [ -n "$root" ] && [ "$dry_run" -eq 0 ]; then
  mkdir -p "$root" || die "--root: cannot create $root"
  root="$(cd "$root" && pwd)"
fi
# The commands that change the system run only in a real install.
run_commands=1
{ [ "$dry_run" -eq 1 ] || [ -n "$root" ]; } && run_commands=0
if [ "$run_commands" -eq 1 ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo bash $0 ...), or see --dry-run / --root"
fi

user=smartbin
state_dir=/var/lib/smartbin
config_dir=/etc/smartbin
config_file="$config_dir/smartbin.toml"
unit_file=/etc/systemd/system/smartbin.service
coral_list=/etc/apt/sources.list.d/coral-edgetpu.list
coral_key=/usr/share/keyrings/coral-edgetpu-archive-keyring.gpg
coral_rule=/etc/udev/rules.d/71-smartbin-coral.rules
unit_changed=0
config_changed=0

say() { echo "install.sh: $*"; }

# run CMD...: run a command that changes the system, or print it.
run() {
  if [ "$run_commands" -eq 1 ]; then
    say "running: $*"
    "$@"
  else
    say "would run: $*"
  fi
}

# put_file DEST MODE < CONTENT: write DEST (under --root) when its content or mode differs.
# Returns 0 when it changed (or would change) something, 1 when DEST was already right.
put_file() {
  local dest="$root$1" mode="$2" tmp
  tmp="$(mktemp)"
  cat >"$tmp"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest" && [ "$(stat -c %a "$dest")" = "$mode" ]; then
    rm -f "$tmp"
    say "unchanged: $1"
    return 1
  fi
  if [ "$dry_run" -eq 1 ]; then
    say "would write: $1 (mode $mode)"
  else
    mkdir -p "$(dirname "$dest")"
    install -m "$mode" "$tmp" "$dest"
    say "wrote: $1 (mode $mode)"
  fi
  rm -f "$tmp"
  return 0
}

# make_dir DIR MODE: create DIR (under --root) with MODE when missing or different.
make_dir() {
  local dest="$root$1" mode="$2"
  if [ -d "$dest" ] && [ "$(stat -c %a "$dest")" = "$mode" ]; then
    say "unchanged: $1/"
  elif [ "$dry_run" -eq 1 ]; then
    say "would create: $1/ (mode $mode)"
  else
    mkdir -p "$dest"
    chmod "$mode" "$dest"
    say "created: $1/ (mode $mode)"
  fi
}

apt_missing() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
  done
}

# -- 1. apt packages ---------------------------------------------------------------------
mapfile -t missing < <(apt_missing python3-venv python3-picamera2)
if [ "${#missing[@]}" -gt 0 ]; then
  run apt-get update
  if [ "$run_commands" -eq 1 ] && ! apt-cache show python3-picamera2 >/dev/null 2>&1; then
    die "python3-picamera2 is not in the apt sources: this installer is for Raspberry Pi OS"
  fi
  run apt-get install -y --no-install-recommends "${missing[@]}"
else
  say "unchanged: apt packages python3-venv python3-picamera2"
fi

# -- 2. Coral Edge TPU (optional) ----------------------------------------------------------
if [ "$coral" -eq 1 ]; then
  if [ -s "$root$coral_key" ]; then
    say "unchanged: $coral_key"
  else
    run sh -c "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \
| gpg --dearmor --yes -o '$root$coral_key'"
  fi
  coral_repo_changed=0
  put_file "$coral_list" 644 <<EOF && coral_repo_changed=1
deb [signed-by=$coral_key] https://packages.cloud.google.com/apt coral-edgetpu-stable main
EOF
  mapfile -t missing < <(apt_missing libedgetpu1-std)
  if [ "${#missing[@]}" -gt 0 ] || [ "$coral_repo_changed" -eq 1 ]; then
    run apt-get update
    run apt-get install -y libedgetpu1-std
  else
    say "unchanged: apt package libedgetpu1-std"
  fi
  # The stick enumerates as 1a6e:089a until its firmware is loaded, then as 18d1:9302.
  if put_file "$coral_rule" 644 <<'EOF'; then
# Coral USB Edge TPU, before (1a6e:089a) and after (18d1:9302) its firmware is loaded:
# readable and writable by the group plugdev (the smartbin user is in it).
SUBSYSTEM=="usb", ATTRS{idVendor}=="1a6e", ATTRS{idProduct}=="089a", MODE="0660", GROUP="plugdev"
SUBSYSTEM=="usb", ATTRS{idVendor}=="18d1", ATTRS{idProduct}=="9302", MODE="0660", GROUP="plugdev"
EOF
    run udevadm control --reload-rules
    run udevadm trigger --subsystem-match=usb
  fi
fi

# -- 3. the user ---------------------------------------------------------------------------
groups=(video)
if [ "$coral" -eq 1 ]; then
  groups+=(plugdev)
fi
if id -u "$user" >/dev/null 2>&1; then
  say "unchanged: user $user"
else
  run useradd --system --user-group --home-dir "$state_dir" --no-create-home \
    --shell /usr/sbin/nologin "$user"
fi
for group in "${groups[@]}"; do
  if id -nG "$user" 2>/dev/null | tr ' ' '\n' | grep -qx "$group"; then
    say "unchanged: $user in group $group"
  else
    getent group "$group" >/dev/null 2>&1 || run groupadd --system "$group"
    run usermod -aG "$group" "$user"
  fi
done

# -- 4. the program: a venv that sees apt's picamera2 ---------------------------------------
python=python3
if [ "$run_commands" -eq 1 ]; then
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "smartbin needs Python >= 3.11 (Raspberry Pi OS Bookworm has 3.11)"
fi
if [ -x "$root$prefix/.venv/bin/python" ]; then
  say "unchanged: $prefix/.venv"
else
  run "$python" -m venv --system-site-packages "$prefix/.venv"
fi
# Pinned versions: a second run installs the same files again (a pulled clone upgrades).
run "$prefix/.venv/bin/python" -m pip install --quiet "${repo}[device,pi]"

# -- 5. state and configuration --------------------------------------------------------------
make_dir "$state_dir" 750
make_dir "$config_dir" 755
if [ -e "$root$config_file" ]; then
  say "kept: $config_file (never overwritten)"
else
  put_file "$config_file" 640 <"$config_src" && config_changed=1
fi
if [ "$run_commands" -eq 1 ]; then
  # chown is idempotent: it leaves owners that are right as they are.
  chown "$user:$user" "$state_dir"
  chgrp "$user" "$config_file"
else
  say "would run: chown $user:$user $state_dir; chgrp $user $config_file"
fi

# -- 6. the systemd unit -------------------------------------------------------------------
sed -e "s#/opt/smartbin#$prefix#g" -e "s#/etc/smartbin/smartbin.toml#$config_file#g" \
  "$repo/firmware_config/smartbin.service" | put_file "$unit_file" 644 && unit_changed=1
if [ "$unit_changed" -eq 1 ]; then
  run systemctl daemon-reload
fi

# -- 7. check, enable, start ---------------------------------------------------------------
if [ "$enable" -eq 0 ]; then
  say "not enabled (--no-enable): sudo systemctl enable --now smartbin"
  exit 0
fi
if [ "$run_commands" -eq 1 ]; then
  if ! runuser -u "$user" -- "$prefix/.venv/bin/smartbin" run --config "$config_file" --check; then
    say "the config does not pass 'smartbin run --check': edit $config_file and run again"
    exit 1
  fi
else
  say "would run: runuser -u $user -- $prefix/.venv/bin/smartbin run --config $config_file --check"
fi
was_active=0
if [ "$run_commands" -eq 1 ] && systemctl is-active --quiet smartbin; then
  was_active=1
fi
run systemctl enable --now smartbin
if [ "$was_active" -eq 1 ] && { [ "$unit_changed" -eq 1 ] || [ "$config_changed" -eq 1 ]; }; then
  run systemctl restart smartbin # the running service picks up the new unit or config
fi
say "done: systemctl status smartbin; journalctl -u smartbin -f"
