# The README's two commands: `make demo` and `make test`.  Both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean postgres chromium java

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

# The database tests start a private PostgreSQL server (tests/enforce/dbapi/conftest.py): install
# Debian's binaries when pg_ctl is nowhere (as root; otherwise the tests say why they skip).
postgres:
	@command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; } || \
	  echo "warning: could not install postgresql; the PostgreSQL tests will be skipped"

# The audit notebook's HTML and the server's audit pages are checked in a real headless Chromium
# (tests/audit/test_notebook_browser.py, tests/jupyter_ext/test_pages_browser.py, the latter through
# Playwright's client with this executable: no browser download): install Debian's when there is none
# (as root; otherwise those tests say why they skip).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || \
	  echo "warning: could not install chromium; the browser tests (audit notebook, audit pages) will be skipped"

# PySpark (a test extra) ships Spark's jars but needs a Java runtime (17+) for local Spark in the tests
# (tests/enforce/spark/): install Debian's when there is no `java` (as root; otherwise those tests skip).
java:
	@command -v java >/dev/null 2>&1 || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q default-jre-headless >/dev/null; } || \
	  echo "warning: could not install a Java runtime; the Spark tests will be skipped"

test: lint postgres chromium java
	$(BIN)/python -m pytest -p no:cacheprovider --nbval-lax tests notebooks

$(VENV)/.bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build .guard_audit
