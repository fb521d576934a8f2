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

# Rebuild the shipped camera-trap model from ../shared, reproducibly (seeded; hours on 2 CPU cores,
# almost all of it training):   make model KEY=/path/to/trapline-release.key
#   1. dataset: camtrap-dev + camtrap-train, teacher-derived boxes, split by camera/site
#   2. fine-tune YOLOv8n (COCO label space: the pretrained head is kept)
#   3. export FP32 and INT8 of the shipped format, gate: INT8 within 1 mAP50 point of FP32 on test
#   4. smoothing on real bursts; the shipped model, its teacher and its COCO base side by side on test
#   5. sign the bundle (report.md, report.json, coverage.png, split table inside)
SHARED_DATA := ../shared/data
MODEL_BUILD := build/model
MODEL_IMGSZ ?= 416
MODEL_EPOCHS ?= 30
MODEL_FREEZE ?= 0
MODEL_LABELS ?= coco
MODEL_FORMAT ?= tflite
MODEL_RECIPE ?= int8-float-decode-lastconv
MODEL_VERSION ?= 2
MODEL_INT8 = $(if $(filter onnx,$(MODEL_FORMAT)),$(MODEL_BUILD)/exports/last-$(MODEL_IMGSZ)-int8.onnx,$(MODEL_BUILD)/exports/last-$(MODEL_IMGSZ)-$(MODEL_RECIPE).tflite)
model: venv
	@test -n "$(KEY)" || { echo "usage: make model KEY=path/to/trapline-release.key"; exit 2; }
	$(PY) -m trapline.cli train prepare --spec training/datasets/camtrap.yaml --data-root $(SHARED_DATA) \
	  --label-space $(MODEL_LABELS) --out $(MODEL_BUILD)/dataset
	$(PY) -m trapline.cli train fit --data $(MODEL_BUILD)/dataset/data.yaml \
	  --weights ../shared/weights/yolov8n-coco.pt --out $(MODEL_BUILD)/run --epochs $(MODEL_EPOCHS) \
	  --imgsz $(MODEL_IMGSZ) --freeze $(MODEL_FREEZE) --oversample --patience 0
	$(PY) -m trapline.cli export --weights $(MODEL_BUILD)/run/fit/weights/last.pt \
	  --dataset $(MODEL_BUILD)/dataset --imgsz $(MODEL_IMGSZ) --formats $(MODEL_FORMAT)-fp32,$(MODEL_FORMAT)-int8 \
	  --recipe $(MODEL_RECIPE) --split test --max-map50-drop 1.0 --out $(MODEL_BUILD)/exports
	$(PY) -m trapline.cli train bursts --model $(MODEL_INT8) --dataset $(MODEL_BUILD)/dataset \
	  --out $(MODEL_BUILD)/report/bursts.json --markdown $(MODEL_BUILD)/report/bursts.md
	$(PY) -m trapline.cli train evaluate --dataset $(MODEL_BUILD)/dataset --split test \
	  --model $(MODEL_INT8) --role shipped \
	  --model ../shared/weights/mdlite-yolox-tiny-640.onnx --role teacher \
	  --model edge/models/yolov8n-coco-int8.tflite --role base \
	  --thresholds val --thresholds teacher --thresholds val \
	  --append $(MODEL_BUILD)/dataset/split.md $(MODEL_BUILD)/exports/export_report.md $(MODEL_BUILD)/report/bursts.md \
	  --out $(MODEL_BUILD)/report
	$(PY) -m trapline.cli export bundle --model $(MODEL_INT8) --name trapline-nano --version $(MODEL_VERSION) \
	  --private-key $(KEY) --metrics $(MODEL_BUILD)/report/report.json \
	  --export-report $(MODEL_BUILD)/exports/export_report.json --measurements $(MODEL_BUILD)/report/bursts.json \
	  --training-run $(MODEL_BUILD)/run/fit --attach $(MODEL_BUILD)/report/report.md \
	  $(MODEL_BUILD)/report/coverage.png $(MODEL_BUILD)/dataset/dataset.png --out $(MODEL_BUILD)/bundle

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
