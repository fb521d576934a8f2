# The few targets people use. Everything installs itself on a fresh Debian machine (run as root
# for the system packages, or install mosquitto yourself).
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv 2>/dev/null)
# Ultralytics (tests and benchmarks only) must never reach the network
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := False
export YOLO_CONFIG_DIR := $(CURDIR)/.cache/ultralytics

.PHONY: demo test lint bench system-deps venv clean

$(VENV)/.installed: requirements.lock pyproject.toml
	@test -n "$(UV)" || python3 -m pip install --quiet uv
	uv venv --quiet --allow-existing --python 3.11 $(VENV)
	VIRTUAL_ENV=$(VENV) uv pip sync --quiet requirements.lock
	VIRTUAL_ENV=$(VENV) uv pip install --quiet --no-deps -e .
	mkdir -p $(YOLO_CONFIG_DIR)/Ultralytics
	cp $(VENV)/lib/python3.11/site-packages/matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf \
	   $(YOLO_CONFIG_DIR)/Ultralytics/Arial.ttf
	touch $@

venv: $(VENV)/.installed

system-deps:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; }

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

# Regenerate the lockfile after changing dependencies in pyproject.toml.
lock:
	uv pip compile pyproject.toml --extra edge --extra train --extra export --extra dev --python-version 3.11 \
	  -o requirements.lock

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
