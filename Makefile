# Every target installs what it needs from the lock file (uv.lock) into .venv first.
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.synced

WEB_BUILD := web/dist/index.html

.PHONY: install compile interpreted web run cluster test lint bench system-deps cassandra-jars clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet "uv==$(UV_VERSION)"

$(STAMP): $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --inexact --python $(VENV)/bin/python
	touch $(STAMP)

## The broker's per-message hot path, compiled with mypyc (build_compiled.py lists the modules and
## says why): a C extension beside each of those .py files, built again whenever one changes. It
## needs a C compiler and Python's headers. `make interpreted` removes it: the same code then runs
## from source (until the next `make install`, `run` or `test`, which build it again).
COMPILED_SOURCES := $(shell $(PYTHON) build_compiled.py --sources)
COMPILED := $(VENV)/.compiled

$(COMPILED): $(STAMP) build_compiled.py pyproject.toml $(COMPILED_SOURCES)
	$(VENV)/bin/python build_compiled.py
	touch $@

install: $(STAMP) $(COMPILED)

compile: $(COMPILED)

interpreted:
	rm -f $(COMPILED)
	if [ -x $(VENV)/bin/python ]; then $(VENV)/bin/python build_compiled.py --clean; fi

## The web chat: MQTT.js and esbuild from the npm lock file, bundled into web/dist.
$(WEB_BUILD): web/package.json web/package-lock.json web/build.mjs $(wildcard web/src/*)
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build

web: $(WEB_BUILD)

APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

## Debian packages the tests use for real (PostgreSQL, Chromium, Java 17 and Maven for
## Cassandra); skipped where already present.
system-deps:
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium fonts-noto-color-emoji"; \
	command -v nats-server >/dev/null || missing="$$missing nats-server"; \
	if [ -n "$$missing" ]; then apt-get update -qq && $(APT_INSTALL) $$missing >/dev/null; fi

## Apache Cassandra for the tests: cassandra-all and its dependencies from Maven Central
## (cassandra-node/pom.xml), copied into a git-ignored folder that tests/support/cassandra.py reads.
CASSANDRA_LIB := .cache/cassandra/lib
$(CASSANDRA_LIB)/.copied: cassandra-node/pom.xml | system-deps
	rm -rf $(CASSANDRA_LIB)
	mvn -q -B -Dstyle.color=never -f cassandra-node/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
		-DoutputDirectory=$(abspath $(CASSANDRA_LIB))
	touch $@

cassandra-jars: $(CASSANDRA_LIB)/.copied

## The benchmark: the project's broker beside stock amqtt and Mosquitto (Debian's package), and
## the chat on each history store: SQLite, PostgreSQL and Cassandra (servers of their own).
bench: install system-deps cassandra-jars
	$(UV) sync --frozen --inexact --group bench --python $(VENV)/bin/python
	@command -v mosquitto >/dev/null || (apt-get update -qq && $(APT_INSTALL) mosquitto >/dev/null)
	$(VENV)/bin/python -m bench all --out docs/benchmarks.md --plots-dir docs/bench

run: install web
	$(VENV)/bin/hubbub up

## A cluster on this machine (launcher/devcluster.py): three NATS servers, PostgreSQL, two broker
## nodes, two persisters, a notifier and an API; prints where to connect; Ctrl-C stops it all.
cluster: install system-deps web
	$(VENV)/bin/python -m launcher.devcluster

## Bytecode caching on even where the environment turns it off (PYTHONDONTWRITEBYTECODE, as in
## container images): the suite starts many Python processes (`hubbub up`, cluster nodes, the
## CLI), and each would compile every module it imports from source again: 3-10 s a start.
test: install system-deps web cassandra-jars
	cd web && npm test
	env -u PYTHONDONTWRITEBYTECODE $(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean: interpreted
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .cache/mypyc
