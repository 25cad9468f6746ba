# The README's two commands, each doing all of its own set-up:
#   make demo   the embedded default: SQLite in instance/, demo data, simulated providers, served on :8000
#   make test   the test suite on SQLite, and on PostgreSQL too when TEST_DATABASE_URL is set
#
# Options: make demo DEMO_ARGS="--reset --port 9000"
#          make test DB=sqlite|postgres|all PYTEST_ARGS="-x -k fallback" PYTEST_WORKERS=1

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Re-install only when pyproject.toml is newer than the last install.
STAMP := $(VENV)/.keyway-installed
DB ?= all
DEMO_ARGS ?=
PYTEST_ARGS ?=
# Parallel test processes (pytest-xdist); each gets its own SQLite files and PostgreSQL database.
PYTEST_WORKERS ?= 2

.PHONY: demo test install

demo: $(STAMP)
	$(PY) manage.py demo $(DEMO_ARGS)

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

# pytest's exit code 5 ("no tests collected") fails the run like any other non-zero code.
test: $(STAMP)
	@set -u; \
	run() { \
		echo "==> pytest on $$1"; \
		$(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS); rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "==> pytest on $$1 collected no tests: counted as a failure"; fi; \
		if [ $$rc -ne 0 ]; then echo "==> pytest on $$1 FAILED (exit code $$rc)"; exit $$rc; fi; \
		echo "==> pytest on $$1 passed"; \
	}; \
	case "$(DB)" in \
		sqlite|all) (unset TEST_DATABASE_URL; run SQLite) || exit $$? ;; \
		postgres) ;; \
		*) echo "DB must be sqlite, postgres or all, not '$(DB)'"; exit 2 ;; \
	esac; \
	if [ "$(DB)" != sqlite ]; then \
		if [ -n "$${TEST_DATABASE_URL:-}" ]; then \
			run PostgreSQL || exit $$?; \
		elif [ "$(DB)" = postgres ]; then \
			echo "DB=postgres needs TEST_DATABASE_URL (postgresql://user@host:port/a-database-the-tests-may-wipe)"; exit 2; \
		else \
			echo "==> TEST_DATABASE_URL is not set: PostgreSQL run skipped"; \
		fi; \
	fi
