# shoplake — the only entry a newcomer needs. `make run` and `make test` set everything up themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# The install stamp depends on the pins: editing pyproject.toml reinstalls, a second `make test` does not.
STAMP := $(VENV)/.installed
SCALE ?= small
PYTEST_ARGS ?=

.PHONY: help install check-java blas run test test-fast lint bench lab local-up local-down local-status dashboard browser clean

help:
	@echo "make run         run the whole workbook on the local target (SCALE=tiny|small|full), HTML reports in reports/"
	@echo "                 TARGET=aws PREFIX=name: the same notebooks on a real account (README: Running on AWS)"
	@echo "make test        install what is missing, lint, run every test"
	@echo "make test-fast   unit + aws contract tests: no local services, no Spark, no browser (about a minute)"
	@echo "make lab         start the local services and JupyterLab on notebooks/"
	@echo "make bench       benchmarks, printed as ratios against baselines measured in the same run"
	@echo "make local-up | local-down | local-status | dashboard | clean"

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory check-java
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip check
	@touch $(STAMP)

install: $(STAMP)

check-java:
	@java -version >/dev/null 2>&1 || { echo "Java 17+ is needed for Spark: install it with 'apt-get install openjdk-17-jre-headless' (Debian/Ubuntu), 'brew install openjdk@17' (macOS), or use environment.yml with conda."; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	  if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then echo "Java $$v found; Spark needs Java 17+ (apt-get install openjdk-17-jre-headless)"; exit 1; fi

# Debian's BLAS/LAPACK for Spark ALS (native speed; without them netlib prints JNI warnings into the reports).
blas:
	@ldconfig -p 2>/dev/null | grep -q 'libblas.so.3' || { command -v apt-get >/dev/null 2>&1 && { echo "installing Debian BLAS/LAPACK for Spark"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libblas3 liblapack3 >/dev/null) \
	  || echo "could not install libblas3/liblapack3: Spark falls back to its Java BLAS (slower, prints a warning)"; }; } || true

# Debian's chromium for the dashboard's browser test (playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian chromium for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "could not install chromium: the browser test will be skipped with a reason"; }

# TARGET=aws PREFIX=name run the same notebooks against a real account (README: Running on AWS)
run: $(STAMP) blas
	$(if $(TARGET),SHOPLAKE_TARGET=$(TARGET)) $(if $(PREFIX),SHOPLAKE_PREFIX=$(PREFIX)) $(BIN)/shoplake run --scale $(SCALE) $(if $(ONLY),--only $(ONLY)) $(if $(KEEP_LOCAL),--keep-local)

test: $(STAMP) browser blas
	$(BIN)/ruff check lib tests bench
	$(BIN)/ruff format --check lib tests bench
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/pytest tests/unit tests/aws $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check lib tests bench
	$(BIN)/ruff format --check lib tests bench

bench: $(STAMP)
	$(PY) -m bench $(if $(ONLY),--only $(ONLY))

lab: $(STAMP)
	$(BIN)/shoplake local up
	@if [ "$$(id -u)" = 0 ]; then echo "running as root (a container or CI?): starting JupyterLab with --allow-root"; fi
	$(BIN)/jupyter lab --notebook-dir=notebooks $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

local-up: $(STAMP)
	$(BIN)/shoplake local up

local-down: $(STAMP)
	$(BIN)/shoplake local down

local-status: $(STAMP)
	$(BIN)/shoplake local status

dashboard: $(STAMP)
	$(BIN)/shoplake dashboard

clean:
	-@test -x $(BIN)/shoplake && $(BIN)/shoplake local down --purge
	rm -rf build reports data/generated .shoplake .pytest_cache .ruff_cache spark-warehouse metastore_db derby.log
