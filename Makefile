# make demo: the whole pipeline on the embedded defaults. make test: ruff, then the test suite.
# Both create .venv and install what they need first (scripts/setup_env.sh).
PY := .venv/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup test test-fast demo clean

setup:
	@bash scripts/setup_env.sh

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

demo: setup
	$(PY) scripts/demo.py

clean:
	rm -rf outputs .pytest_cache
