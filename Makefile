# UltrAI core. `make dev` runs the stack; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REQS := requirements-dev.txt shared/pyproject.toml shared/requirements.txt shared/requirements-db.txt shared/requirements-otel.txt \
        $(wildcard services/*/requirements.txt)
# The services with migrations: every services/<name>/ultrai_<name>/migrate.py.
SERVICES := $(foreach f,$(wildcard services/*/ultrai_*/migrate.py),$(word 2,$(subst /, ,$(f))))
export PYTHONPATH := $(CURDIR)

# The npm projects: the web app, and what the browser tests inject into pages (axe-core). Installed
# when npm is (a machine without Node runs the API alone; CI=true needs it: .ci/run checks).
NPM := $(shell command -v npm 2>/dev/null)
NPM_DIRS := $(patsubst %/package.json,%,$(wildcard web/package.json tests/browser/package.json))
# npm rewrites node_modules/.package-lock.json on every install: newer than the lock file, up to date.
NPM_STAMPS := $(if $(NPM),$(addsuffix /node_modules/.package-lock.json,$(NPM_DIRS)))

.PHONY: install dev test test-fast test-web lint format bench bench-compare migrate deploy-check audit clean

## install: the virtual environment with every service's requirements and the test tools, and
## `npm ci` of the web app (and of the browser tests' axe-core) when npm is installed
install: $(STAMP) $(NPM_STAMPS)
$(STAMP): $(REQS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@
%/node_modules/.package-lock.json: %/package-lock.json %/package.json
	cd $* && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

## dev: run the four services on 8000 (gateway), 8001 (auth), 8002 (documents), 8003 (llm), and the
## web app on http://localhost:5173 (Vite's dev server) when Node 20+ is installed
dev: install migrate
	$(PY) -m tools.dev

## migrate: every service's migrations against its configured database (what preDeployCommand runs)
migrate: install
	@for s in $(SERVICES); do \
	  (cd services/$$s && PYTHONPATH=$(CURDIR):$(CURDIR)/services/$$s DATA_DIR=$${DATA_DIR:-$(CURDIR)/data} \
	    $(CURDIR)/$(PY) -m ultrai_$$s.migrate) || exit 1; \
	done

## deploy-check: each service built and started as Render does, in a brand-new virtual environment,
## and the web app built as Render's static site, with its bundle sizes (slow: fresh installs; not
## part of `make test`). `make deploy-check CHECK=llm` checks one; CHECK=web the static site.
deploy-check: install
	$(PY) -m tools.deploy_check $(CHECK)

## test: the whole suite: the web app's unit tests (Vitest) and its build (type check included), then
## every Python test, the browser tests of the built app among them (SQLite and in-process cache;
## PostgreSQL and Redis too when TEST_DATABASE_URL and TEST_REDIS_URL are set), with line and branch
## coverage of shared/ and the services (their own processes included); the figure is printed at the end
test: install
	@$(MAKE) --no-print-directory test-web; web=$$?; \
	  rm -rf .coverage && mkdir -p .coverage; \
	  $(PY) -m coverage run -m pytest $(PYTEST_ARGS); status=$$?; \
	  $(PY) -m coverage combine -q && $(PY) -m coverage report --sort=cover | tail -n 25; \
	  echo "coverage: $$($(PY) -m coverage report --format=total)% of shared/ and the services (lines and branches)"; \
	  if [ $$web -ne 0 ]; then echo "the web app's tests or build FAILED (above)"; exit $$web; fi; \
	  exit $$status

## test-web: the web app's unit tests (npm test: Vitest) and its production build (npm run build:
## tsc, then vite build into web/dist); without npm it skips, and fails under CI=true
test-web:
	@if [ ! -f web/package.json ]; then exit 0; fi; \
	if [ -z "$(NPM)" ]; then \
	  if [ "$${CI:-}" = true ]; then echo "CI=true needs npm (Node.js 20+) for the web app's tests"; exit 1; fi; \
	  echo "web app's tests skipped: npm is not installed (Node.js 20+)"; exit 0; \
	fi; \
	cd web && npm test && npm run build

## test-fast: the tests that start no process and need no server (well under a minute)
FAST_TESTS := tests/shared tests/auth/test_keys.py tests/auth/test_passwords.py tests/auth/test_sessions.py \
	tests/auth/test_throttle.py tests/gateway/test_cors.py tests/gateway/test_rate_limits.py \
	tests/documents/test_parser_releases.py tests/deploy/test_compose.py tests/deploy/test_dockerfiles.py \
	tests/deploy/test_env_example.py tests/deploy/test_render.py tests/deploy/test_requirements.py \
	tests/deploy/test_render_web.py tests/deploy/test_web_image.py tests/deploy/test_web_bundle.py tests/deploy/test_dev.py
test-fast: install
	$(PY) -m pytest -m "not e2e and not slow" $(FAST_TESTS) $(PYTEST_ARGS)

## lint: ruff (style and common bugs) and mypy --strict on shared/ and the services
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## audit: newer releases of the pinned packages and known advisories (asks the package index;
## reports only, and is not part of `make test` or CI)
audit: install
	$(PY) -m tools.audit
	@$(PY) -m pip install --quiet pip-audit && $(VENV)/bin/pip-audit --progress-spinner off || true

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## bench: every benchmark in bench/, figures printed and written as JSON under bench/results/
bench: install
	@command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk"; exit 1; }
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

## bench-compare: each benchmark's latest figures beside its run before, with their ratio
bench-compare: install
	$(PY) -m tools.bench_results

clean:
	rm -rf $(VENV) data .deploy-check .coverage web/node_modules web/dist tests/browser/node_modules
