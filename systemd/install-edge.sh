#!/usr/bin/env bash
# Install the Trapline agent on a Raspberry Pi (Raspberry Pi OS, Python 3.11). Run as root from a
# checkout of the repository:  sudo systemd/install-edge.sh /path/to/agent.yaml
set -euo pipefail
config=${1:?usage: install-edge.sh AGENT_CONFIG.yaml}
here=$(cd "$(dirname "$0")/.." && pwd)

id trapline >/dev/null 2>&1 || useradd --system --home /var/lib/trapline --shell /usr/sbin/nologin trapline
usermod -aG video trapline  # the camera
install -d -o trapline -g trapline /var/lib/trapline /var/lib/trapline/quarantine
install -d /etc/trapline /opt/trapline
python3 -m venv --system-site-packages /opt/trapline/venv  # picamera2 comes from apt on the Pi
/opt/trapline/venv/bin/pip install --upgrade "${here}[edge]"
install -m 0644 "${here}/README.md" /opt/trapline/README.md
install -m 0640 -g trapline "$config" /etc/trapline/agent.yaml
if [ ! -f /etc/trapline/mqtt-password ]; then
  echo "write the trap's MQTT password to /etc/trapline/mqtt-password (mode 0600), then restart" >&2
  install -m 0600 /dev/null /etc/trapline/mqtt-password
fi
install -m 0644 "${here}/systemd/trapline-edge.service" /etc/systemd/system/trapline-edge.service
systemctl daemon-reload
systemctl enable --now trapline-edge.service
/opt/trapline/venv/bin/trapline edge check --config /etc/trapline/agent.yaml
