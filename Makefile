# disal-backend: every command a user or CI needs. See README.md.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY ?= python3
VENV := .venv
LS_VENV := .ls-venv
PIP_QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
PORT ?= 9090

.PHONY: install install-ls install-bench install-system serve worker demo test test-redis test-fast bench bench-full clean

## Idempotent: re-running only installs what changed in the requirement files.
install: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-data.txt
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt -r requirements-dev.txt $(PIP_QUIET)
	$(VENV)/bin/pip install -q --no-deps -r requirements-data.txt $(PIP_QUIET)
	touch $@

## Label Studio is a separate service: its own virtual environment.
install-ls: $(LS_VENV)/.installed
$(LS_VENV)/.installed: requirements-labelstudio.txt
	test -x $(LS_VENV)/bin/python || $(PY) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q -r requirements-labelstudio.txt $(PIP_QUIET)
	touch $@

## Benchmark-only extras (the peers small-text and baal): never in the service image. Resolved together
## with requirements.txt so the service's pins hold (numpy<2.3).
install-bench: $(VENV)/.bench-installed
$(VENV)/.bench-installed: requirements-bench.txt requirements.txt $(VENV)/.installed
	$(VENV)/bin/pip install -q -r requirements.txt -r requirements-bench.txt $(PIP_QUIET)
	touch $@

## System packages the browser tests (tests/browser: Debian's chromium driven by selenium) and the
## services need. Idempotent: installed packages are left alone; a miss runs `apt-get update` once and
## installs again. Without apt-get (not Debian/Ubuntu) it says so LOUDLY and the browser tests skip
## with that reason; nothing ever downloads a browser build (selenium runs with SE_OFFLINE=true).
SYSTEM_PKGS := chromium chromium-driver redis-server
install-system:
	@if ! command -v apt-get >/dev/null 2>&1; then \
		echo "!!! WARNING: no apt-get on this machine: cannot install $(SYSTEM_PKGS);" \
		     "the browser tests (tests/browser) will be SKIPPED !!!"; \
	elif dpkg -s $(SYSTEM_PKGS) >/dev/null 2>&1; then \
		echo "system packages present: $(SYSTEM_PKGS)"; \
	else \
		APT="env DEBIAN_FRONTEND=noninteractive apt-get"; [ "$$(id -u)" = 0 ] || APT="sudo -n $$APT"; \
		$$APT install -y --no-install-recommends $(SYSTEM_PKGS) \
		|| { $$APT update && $$APT install -y --no-install-recommends $(SYSTEM_PKGS); }; \
	fi

## Every test, then every test that runs a backend again with its jobs on Redis (--job-queue=redis:
## a real redis-server for the session); the fault tests (tests/reliability/test_durable_jobs.py)
## run both modes themselves.
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 SE_OFFLINE=true
REDIS_SUITE := tests/e2e tests/browser tests/reliability/test_under_load.py
test: install install-ls install-bench install-system
	$(TEST_ENV) $(VENV)/bin/python -m pytest tests
	$(TEST_ENV) $(VENV)/bin/python -m pytest $(REDIS_SUITE) --job-queue=redis

test-redis: install install-ls install-bench install-system
	$(TEST_ENV) $(VENV)/bin/python -m pytest $(REDIS_SUITE) --job-queue=redis

test-fast: install install-bench
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest tests -m "not e2e and not slow"

## Benchmarks (docs/benchmarks.md). bench: minutes -- cost (scoring ratios, real Label Studio rounds
## at 1k and 10k tasks, latencies, push rate, memory -> bench/out/perf.json) and a 3-seed quality run
## -> bench/out/quality-quick/benchmarks.md. bench-full: every strategy and peer, 5 seeds, full-size
## cost runs; rewrites docs/benchmarks.md and its PNGs.
BENCH_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
bench: install install-ls install-bench
	$(BENCH_ENV) $(VENV)/bin/python bench/perf.py --preset quick
	$(BENCH_ENV) $(VENV)/bin/python -m disal.bench.suite --preset quick

bench-full: install install-ls install-bench
	$(BENCH_ENV) $(VENV)/bin/python bench/perf.py --preset full
	$(BENCH_ENV) $(VENV)/bin/python -m disal.bench.suite --preset full --report docs/benchmarks.md --figures docs

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache bench/out

## The backend: ONE gunicorn web worker with threads on $PORT (default 9090), and WORKERS job worker
## processes beside it (default 1; gunicorn.conf.py starts and restarts them). Jobs persist in
## MODEL_DIR/jobs (SQLite), or go through REDIS_URL. Configured by LABEL_STUDIO_URL,
## LABEL_STUDIO_API_KEY, MODEL_DIR, MODEL_NAME (see README); gunicorn.conf.py holds the worker class
## (a read deadline per request) and the limits.
THREADS ?= 32
serve: install
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} THREADS=$(THREADS) PORT=$(PORT) $(VENV)/bin/gunicorn \
		--config gunicorn.conf.py --access-logfile - _wsgi:app

## The newcomer's path: a real Label Studio (127.0.0.1:8080) with a BBC News (text) project and an
## MNIST (image) project whose queues are prioritized by the backend (127.0.0.1:9090). DEMO=bbc or
## DEMO=mnist brings up one of them. Ctrl-C stops both services. Data in .demo/.
DEMO ?= all
demo: install install-ls
	HF_HUB_OFFLINE=1 $(VENV)/bin/python scripts/demo.py --demo $(DEMO)

## One more job worker: run it N times, on any machine with the same MODEL_DIR (shared) and REDIS_URL.
## Without REDIS_URL it shares the SQLite queue in MODEL_DIR, so only on this machine.
worker: install
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(VENV)/bin/python -m disal.worker
