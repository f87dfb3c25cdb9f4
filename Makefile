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

# One pytest process per test file: a long pytest process dies with SIGSEGV inside jaxlib's CPU compiler after
# several hundred tests' compilations (seen at test_sublayers with 530 tests, then at test_regime in the first of
# three groups); a fresh process per file keeps each one short. Exit status 5 (every test deselected) is not a failure.
TEST_FILES := $(sort $(wildcard tests/test_*.py))

test: $(STAMP)
	@rc=0; for f in $(TEST_FILES); do \
	  echo "== $$f"; $(BIN)/python -m pytest -q $(PYTEST_ARGS) $$f; s=$$?; \
	  if [ $$s -ne 0 ] && [ $$s -ne 5 ]; then rc=1; echo "FAILED: $$f (exit $$s)"; fi; \
	done; exit $$rc

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/jvp_throughput.py

clean:
	rm -rf $(VENV) results .pytest_cache
