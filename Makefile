# masplatform: `make demo`, `make test`, `make run`. Only Python 3.11+ is needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Local use runs with DEBUG on (a built-in development secret key) unless the
# environment or .env says otherwise; production sets MASP_SECRET_KEY.
ifeq ($(shell grep -s '^MASP_DEBUG=' .env),)
export MASP_DEBUG ?= 1
endif

.PHONY: demo test run setup lint bench clean fuzz

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

setup: $(STAMP)
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py collectstatic --noinput -v 0

demo: setup
	$(PY) manage.py demo $(ARGS)

# The same suite twice: on the embedded default, then on PostgreSQL + Redis
# (skipped when those are unreachable, unless MASP_REQUIRE_SERVICES=1).
test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)
	MASP_TEST_STACK=services $(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) fuzz

# schemathesis over every operation of the live schema, as an agent then as staff, on a real
# server and a throwaway database under var/fuzz/ (docs/api.md, "Fuzzing"). The seed and the
# examples per operation live in tests/fuzz/run.py; FUZZ_ARGS="--seed N --phase staff" replays.
fuzz: setup
	$(PY) tests/fuzz/run.py $(FUZZ_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

run: setup
	$(PY) manage.py runplatform $(ARGS)

bench: setup
	$(PY) bench/registry.py $(ARGS)
	$(PY) bench/invocations.py $(ARGS)
	$(PY) bench/http.py $(ARGS)

clean:
	-$(PY) manage.py broker stop
	rm -rf var $(VENV)
