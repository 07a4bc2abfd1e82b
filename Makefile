# The README's two commands: `make demo` and `make test`.  Both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m guard_kernel demo

lint: $(STAMP)
	$(BIN)/ruff check guard_kernel jupyter_ext tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -p no:cacheprovider --nbval-lax tests notebooks

$(VENV)/.bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build .guard_audit
