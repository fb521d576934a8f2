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
  install -m 0600 /dev/null /etc/trapline/mqtt-password
fi
install -m 0644 "${here}/systemd/trapline-edge.service" /etc/systemd/system/trapline-edge.service
systemctl daemon-reload
# enabled now; it starts (now and at every boot) only once the password file is not empty: started
# without one, the broker refuses the trap and the agent waits 15 minutes before it tries again
systemctl enable trapline-edge.service
/opt/trapline/venv/bin/trapline edge check --config /etc/trapline/agent.yaml
if [ -s /etc/trapline/mqtt-password ]; then
  systemctl restart trapline-edge.service
  echo "trapline-edge is running: systemctl status trapline-edge"
else
  cat >&2 <<'EOF'
trapline-edge is installed but NOT started: /etc/trapline/mqtt-password is empty.
Write the trap's MQTT password, then start the agent:
  sudo sh -c 'printf %s "PASSWORD" > /etc/trapline/mqtt-password'
  sudo systemctl start trapline-edge
EOF
fi
