# SMS developer entry points. `make test` is what CI runs (.ci/run).
PYTHON := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: bootstrap test up

bootstrap:  ## install Debian packages, .venv and the project (idempotent; root on a fresh machine)
	bash infra/bootstrap.sh

test: bootstrap  ## unit and integration tests against real peers started on loopback
	$(PYTHON) -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

up: bootstrap  ## start SMS locally
	.venv/bin/sms up
