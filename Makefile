# Two commands on a fresh machine:  `make demo` (the main job) and `make test` (the test suite).
# Each creates the virtual environment first when it is missing or out of date.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch/torchvision pinned to the releases this project is tested with (CPU use; the wheel is generic).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test setup benchmarks sweep-mtd notebooks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test,faiss]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/patchcore-kit demo

test: $(STAMP)
	$(PY) -m pytest -ra

benchmarks: $(STAMP)
	for script in benchmarks/bench_*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf runs .pytest_cache
