#!/usr/bin/env bash
# Turn a fresh 64-bit Raspberry Pi OS into a trap, in one command, as root, from a copy of this
# repository (a USB stick is enough):
#   sudo systemd/install-edge.sh --device trap-07 --server https://fleet.example.org --token TOKEN \
#        --site ridge-north --lat -41.29 --lon 174.78 --height 0.8 --heading 135 --reference-photo scene.jpg
# Installs the agent into /opt/trapline/venv from the Pi's pinned packages (edge/requirements-pi.txt,
# the versions `make arm64-check` verified), then runs `trapline provision` with the same arguments
# (enrolment, config, secrets, keyring, unit, `trapline edge check`). The agent is started only
# once provisioning has written its password: never without one.
# Without network at the site: `--wheels DIR` (made beforehand with `make pi-wheels`) and
# `--offline FILE` (from `trapline server device enrol-offline`).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=/opt/trapline/venv
pip_from=()
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) pip_from=(--no-index --find-links "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "run as root: sudo $0 ..." >&2; exit 2; }
install -d /opt/trapline
[ -x "$venv/bin/python" ] || python3 -m venv --system-site-packages "$venv"  # picamera2 comes from apt
"$venv/bin/pip" install --quiet "${pip_from[@]}" --constraint "$here/edge/requirements-pi.txt" "${here}[edge]"
install -m 0644 "$here/README.md" /opt/trapline/README.md
exec "$venv/bin/trapline" provision --venv "$venv" "${args[@]}"
