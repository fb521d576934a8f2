# The few targets people use. Everything installs itself on a fresh Debian machine (run as root
# for the system packages, or install mosquitto yourself).
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv 2>/dev/null)
# Ultralytics (tests and benchmarks only) must never reach the network
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := False
export YOLO_CONFIG_DIR := $(CURDIR)/.cache/ultralytics

.PHONY: demo test lint bench system-deps venv clean model lock lock-pi arm64-check units-check pi-wheels

# bytecode compiled once at install: where PYTHONDONTWRITEBYTECODE is set (as on the development
# machine) every process would otherwise compile PyTorch's modules again (20 s per training process)
$(VENV)/.installed: requirements.lock pyproject.toml
	@test -n "$(UV)" || python3 -m pip install --quiet uv
	uv venv --quiet --allow-existing --python 3.11 $(VENV)
	VIRTUAL_ENV=$(VENV) uv pip sync --quiet --compile-bytecode requirements.lock
	VIRTUAL_ENV=$(VENV) uv pip install --quiet --no-deps -e .
	mkdir -p $(YOLO_CONFIG_DIR)/Ultralytics
	cp $(VENV)/lib/python3.11/site-packages/matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf \
	   $(YOLO_CONFIG_DIR)/Ultralytics/Arial.ttf
	touch $@

venv: $(VENV)/.installed

# mosquitto: the broker; postgresql, chromium and redis-server: database, dashboard and job-queue
# tests (skipped if absent)
system-deps:
	@{ command -v mosquitto || test -x /usr/sbin/mosquitto; } >/dev/null && test -d /usr/lib/postgresql && \
	  command -v chromium >/dev/null && command -v redis-server >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto postgresql chromium redis-server; }

demo: system-deps venv
	$(PY) -m trapline.cli demo

test: system-deps venv
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: system-deps venv
	$(PY) -m bench

# Rebuild the shipped camera-trap model from ../shared (about 15 min on 2 CPU cores):
#   make model KEY=/path/to/trapline-release.key
CAMTRAP := ../shared/data/camtrap-dev
MODEL_BUILD := build/model
MODEL_IMGSZ ?= 416
MODEL_EPOCHS ?= 30
MODEL_FREEZE ?= 0
model: venv
	@test -n "$(KEY)" || { echo "usage: make model KEY=path/to/trapline-release.key"; exit 2; }
	$(PY) -m trapline.cli train prepare --images $(CAMTRAP)/images --out $(MODEL_BUILD)/dataset \
	  --megadetector $(CAMTRAP)/megadetector.json --md-threshold 0.5 \
	  --yolo-labels $(CAMTRAP)/labels/pw-example --yolo-classes animal --species $(CAMTRAP)/species.csv
	$(PY) -m trapline.cli train fit --data $(MODEL_BUILD)/dataset/data.yaml \
	  --weights ../shared/weights/yolov8n-coco.pt --out $(MODEL_BUILD)/run --epochs $(MODEL_EPOCHS) \
	  --imgsz $(MODEL_IMGSZ) --freeze $(MODEL_FREEZE) --oversample --patience 0
	$(PY) -m trapline.cli export --weights $(MODEL_BUILD)/run/fit/weights/last.pt \
	  --data $(MODEL_BUILD)/dataset/data.yaml --imgsz $(MODEL_IMGSZ) --formats onnx-int8 \
	  --out $(MODEL_BUILD)/exports
	$(PY) -m trapline.cli train evaluate --model $(MODEL_BUILD)/exports/last-$(MODEL_IMGSZ)-int8.onnx \
	  --data $(MODEL_BUILD)/dataset/data.yaml --imgsz $(MODEL_IMGSZ) \
	  --baseline edge/models/yolov8n-coco-int8.tflite --out $(MODEL_BUILD)/report
	$(PY) -m trapline.cli export bundle --model $(MODEL_BUILD)/exports/last-$(MODEL_IMGSZ)-int8.onnx \
	  --name trapline-nano --version 1 --private-key $(KEY) --metrics $(MODEL_BUILD)/report/report.json \
	  --export-report $(MODEL_BUILD)/exports/export_report.json --training-run $(MODEL_BUILD)/run/fit \
	  --attach $(MODEL_BUILD)/report/report.md $(MODEL_BUILD)/report/threshold_curve.png \
	  $(MODEL_BUILD)/report/confusion.png $(MODEL_BUILD)/dataset/dataset.png --out $(MODEL_BUILD)/bundle

# The trap's code on aarch64 under qemu-aarch64 10 (bookworm-backports): an arm64 bookworm root
# with Python 3.11 and the Pi's pinned packages, cached under .cache/arm64 (see arm64/check.sh).
arm64-check:
	@command -v debootstrap >/dev/null && command -v qemu-aarch64 >/dev/null || { \
	  echo "needs debootstrap and qemu-user 10 (bookworm-backports); see .ci/run"; exit 2; }
	arm64/check.sh

# systemd units: `systemd-analyze verify` clean and exposure scores under the targets
units-check: venv
	$(PY) -m pytest tests/systemd -q

# The Pi's constraints, same versions as requirements.lock where aarch64 has them.
lock-pi:
	( sed -n '1,3p' edge/requirements-pi.txt; uv pip compile pyproject.toml --extra edge \
	  --python-platform aarch64-unknown-linux-gnu --python-version 3.11 -c requirements.lock \
	  --no-header --no-annotate -q ) > edge/requirements-pi.txt.new && mv edge/requirements-pi.txt.new edge/requirements-pi.txt

# Wheels for a trap at a site without network (aarch64, Python 3.11): copy build/pi-wheels beside
# the repository and run systemd/install-edge.sh --wheels build/pi-wheels ...
pi-wheels:
	rm -rf build/pi-wheels && mkdir -p build/pi-wheels
	python3 -m pip download --quiet --only-binary=:all: --platform manylinux_2_28_aarch64 \
	  --platform manylinux2014_aarch64 --python-version 3.11 -r edge/requirements-pi.txt -d build/pi-wheels
	# installing trapline itself builds it: setuptools must be there too, offline
	python3 -m pip download --quiet --only-binary=:all: --python-version 3.11 -d build/pi-wheels "setuptools>=68"
	python3 -m pip wheel --quiet --no-deps -w build/pi-wheels .

# Regenerate the lockfile after changing dependencies in pyproject.toml.
lock:
	uv pip compile pyproject.toml --extra edge --extra server --extra train --extra export --extra dev --python-version 3.11 \
	  -o requirements.lock

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
