# make demo: the whole pipeline on the embedded defaults. make test: ruff, then the test suite.
# Both create .venv and install what they need first (scripts/setup_env.sh).
PY := .venv/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup test test-fast demo sweep clean

setup:
	@bash scripts/setup_env.sh

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

# Independent stages run JOBS at a time (SFT beside the reward models, the PPO runs in pairs).
JOBS ?= 2
demo: setup
	$(PY) scripts/demo.py --jobs $(JOBS)

# The weight x seed study; needs the demo's SFT and reward models (make demo first). SWEEP=sweep_crs for the full grid.
SWEEP ?= sweep_crs_small
sweep: setup
	$(PY) -m crs sweep --config_subset $(SWEEP)

clean:
	rm -rf outputs .pytest_cache
