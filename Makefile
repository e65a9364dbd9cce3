# SMS developer entry points. `make test` is what CI runs (.ci/run).
PYTHON := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: bootstrap test drills up

bootstrap:  ## install Debian packages, .venv and the project (idempotent; root on a fresh machine)
	bash infra/bootstrap.sh

test: bootstrap  ## unit and integration tests against real peers started on loopback, the HA drills too
	$(PYTHON) -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

drills: bootstrap  ## the HA fault drills alone (docs/deploy.md); SMS_HA_DRILLS_FULL=1 for the full load
	$(PYTHON) -m pytest -q -p no:cacheprovider -s --timeout 1800 -m drills $(PYTEST_ARGS)

up: bootstrap  ## start SMS locally
	.venv/bin/sms up
