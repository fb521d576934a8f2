#!/usr/bin/env bash
# `make arm64-check`: the trap's code on aarch64, under qemu-aarch64 (user-mode emulation of a
# Cortex-A76, the Raspberry Pi 5's core), with the trap's pinned packages and Python 3.11 from
# Debian bookworm arm64:
#   1. `trapline edge check` loads the signed packaged bundle and finds the cougar sample;
#   2. the edge tests that can run there (not the slow broker-outage ones; tests that spawn
#      sys.executable get a wrapper, since there is no binfmt here), with a real Mosquitto on
#      the host.
# qemu must be 10 or newer (bookworm-backports): 7.2 segfaults in onnxruntime >= 1.28 and
# ai-edge-litert >= 2.2.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${ARM64_CACHE:-$here/.cache/arm64}
started=$(date +%s)
"$here/arm64/sysroot.sh" "$cache"

qemu=$(command -v qemu-aarch64 || true)
[ -n "$qemu" ] || { echo "qemu-aarch64 is missing: apt-get install -t bookworm-backports qemu-user" >&2; exit 2; }
major=$("$qemu" --version | sed -n 's/.*version \([0-9]*\).*/\1/p')
[ "$major" -ge 10 ] || { echo "qemu-aarch64 $major is too old: use 10+ from bookworm-backports" >&2; exit 2; }

# `python3` for aarch64, callable by the host (tests spawn sys.executable through it)
bin=$cache/bin && mkdir -p "$bin" "$cache/hook"
cat > "$bin/python3" <<WRAP
#!/bin/sh
exec "$qemu" -cpu cortex-a76 -L "$cache/root" "$cache/root/usr/bin/python3.11" "\$@"
WRAP
chmod +x "$bin/python3"
cat > "$cache/hook/sitecustomize.py" <<'HOOK'
# arm64 check only: sys.executable is the aarch64 binary, which the host cannot exec without
# binfmt; point it at the wrapper that runs it under qemu
import os
import sys

sys.executable = os.environ.get("TRAPLINE_ARM64_PYTHON", sys.executable)
HOOK
export TRAPLINE_ARM64_PYTHON=$bin/python3
export PYTHONPATH=$cache/hook:$cache/site:$here
export PYTHONDONTWRITEBYTECODE=1 TRAPLINE_TEST_TIME_SCALE=${TRAPLINE_TEST_TIME_SCALE:-6}
cd "$here"

"$bin/python3" -c 'import platform, sys; print("arm64:", platform.machine(), sys.version.split()[0])'
config=$(mktemp -d)/agent.yaml
printf 'device_id: arm64-check\nsource: {type: folder, path: %s}\n' "$(dirname "$config")" > "$config"
out=$("$bin/python3" -m trapline.cli --log-level warning edge check --config "$config" \
  --image edge/samples/cougar-39858-0.jpg)
echo "$out"
echo "$out" | grep -q "found    animal" || { echo "arm64: the cougar was not found" >&2; exit 1; }

# onnx/ultralytics are not part of a trap: their tests skip; slow ones are the broker outages.
# tests/edge/ota is left out: it builds bundles with onnx and holds the model switch to real-time
# limits (under 2 s) that emulation, 100-1000x slower, cannot meet.
"$bin/python3" -m pytest tests/edge -p no:cacheprovider -q -m "not slow" -o addopts="" \
  --ignore tests/edge/ota --timeout 900 -rs ${ARM64_PYTEST_ARGS:-}
echo "arm64 check passed in $(( $(date +%s) - started )) s"
