# Two commands on a fresh machine with only Python 3:
#   make run   — set up .venv, then the full analysis of the trained built-in models into results/
#   make test  — set up .venv, then the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run test test-slow bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/loopjax report --out results --overwrite

# Three processes: one long pytest process dies with SIGSEGV inside jaxlib's CPU compiler after ~530 tests
# (twice at tests/test_sublayers.py, with and without a persistent cache); each group runs in a fresh one.
SECOND := tests/test_sublayers.py tests/test_summary.py tests/test_token_spectrum.py tests/test_torch_baseline.py \
          tests/test_torch_pickle.py
THIRD  := tests/test_train.py tests/test_unseen_models.py

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) $(addprefix --ignore=,$(SECOND) $(THIRD))
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) $(SECOND)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) $(THIRD)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/jvp_throughput.py

clean:
	rm -rf $(VENV) results .pytest_cache
