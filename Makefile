# Two commands on a fresh machine:  `make demo` (the main job) and `make test` (the test suite).
# Each creates the virtual environment first when it is missing or out of date.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch/torchvision pinned to the releases this project is tested with (CPU use; the wheel is generic).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test setup benchmarks mtd mtd-settings tune-mtd tune-mtd-baselines clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test,faiss,onnx]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/patchcore-kit demo

# Style first (seconds), then every example in a docstring, then the tests on two workers (pytest-xdist).
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -ra --doctest-modules patchcore_kit
	$(PY) -m pytest -ra -n 2 tests

# Each benchmark rewrites its committed output in docs/benchmarks/ (about 45 minutes in all). The
# coreset benchmark runs on one torch thread, the fairer reference for the plain loop (docs/benchmarks.md).
benchmarks: $(STAMP)
	set -o pipefail; for script in benchmarks/bench_*.py; do \
	  name=$$(basename $$script .py); args=$$( [ $$name = bench_coreset ] && echo --threads 1 ); \
	  $(PY) $$script $$args | tee docs/benchmarks/$$name.txt || exit 1; done

# MTD with the offline backbone and the settings chosen on development folds (docs/mtd_settings.md).
MTD ?= $(or $(PATCHCORE_KIT_MTD),../shared/data/mtd)
mtd: $(STAMP)
	$(VENV)/bin/patchcore-kit evaluate $(MTD) --format mtd --shots 100 --seed 0 --coreset-ratio 0.1 \
	  --layers layer3 layer4 --patch-size 1 --output runs/mtd

# Re-choose those settings (about an hour): docs/mtd_settings/{candidates.csv,chosen.json}.
mtd-settings: $(STAMP)
	$(PY) scripts/mtd_settings.py --root $(MTD)

# The same choice through the general command (a reduced grid holding the committed choice; docs/tuning.md).
tune-mtd: $(STAMP)
	$(VENV)/bin/patchcore-kit tune $(MTD) --format mtd --shots 100 --seed 0 --validation real \
	  --grid docs/tuning/grid_mtd.yaml --output runs/tune_mtd
	$(VENV)/bin/patchcore-kit evaluate $(MTD) --format mtd --shots 100 --seed 0 \
	  --settings runs/tune_mtd/settings.json --output runs/mtd_tuned

# PaDiM and SPADE at their own development-fold settings, same protocol (docs/tuning.md, issue #10).
tune-mtd-baselines: $(STAMP)
	$(VENV)/bin/patchcore-kit tune $(MTD) --format mtd --shots 100 --seed 0 --validation real --method padim \
	  --grid docs/tuning/grid_mtd_padim_stretch.yaml --feature-cache runs/cache_mtd_tune --output runs/tune_mtd_padim
	$(VENV)/bin/patchcore-kit tune $(MTD) --format mtd --shots 100 --seed 0 --validation real --method spade \
	  --grid docs/tuning/grid_mtd_spade.yaml --feature-cache runs/cache_mtd_tune --output runs/tune_mtd_spade
	for m in padim spade; do $(VENV)/bin/patchcore-kit evaluate $(MTD) --format mtd --shots 100 --seed 0 \
	  --settings runs/tune_mtd_$$m/settings.json --feature-cache runs/cache_mtd_tune --output runs/mtd_tuned_$$m; done

clean:
	rm -rf runs .pytest_cache
