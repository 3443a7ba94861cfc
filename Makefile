# clsuite: `make repro` (set up + dvc repro on the embedded default), `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup repro test bench clean-runs

$(STAMP): pyproject.toml examples/clsuite-er-ace/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -e '.[test]'
	# animal-mnist ships the animal silhouettes; its own requirements pull TensorFlow,
	# which clsuite never imports, so it is installed without dependencies.
	$(BIN)/python -m pip install --no-deps animal-mnist==0.4
	# the worked example of a third-party method package (docs/adding-a-method.md)
	$(BIN)/python -m pip install --no-deps -e examples/clsuite-er-ace
	touch $@

setup: $(STAMP)

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

# speed benchmarks (benchmarks/README: ratios, interleaved in one process): < 10 min on 2 CPU cores
bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/run_all.py

clean-runs:
	rm -rf data/raw data/prepared data/runs
