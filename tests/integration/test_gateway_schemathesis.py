"""schemathesis against the gateway's OpenAPI spec with an admin token: no operation answers 5xx.

The gateway runs over a catalog of its own (generated data never touches other tests' rows),
and scripts it deploys go to a work pool no worker serves (generated runs never execute). The test
bed's Prometheus and Elasticsearch back the monitoring API (a missing peer would be a 503).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from sms_plugin.catalog import Catalog
from sms_plugin.gateway.app import create_app
from sms_plugin.gateway.config import GatewaySettings
from tests.integration.gateway_fixtures import Gateway, serve

pytestmark = pytest.mark.integration

#: Examples per operation; SMS_FUZZ_EXAMPLES raises it for a deeper run (the suite stays fast with 6).
EXAMPLES = int(os.environ.get("SMS_FUZZ_EXAMPLES", "6"))
#: Status codes seen per operation, checked at the end.
STATUSES: dict[str, set[int]] = {}


@pytest.fixture(scope="module")
def fuzzed_gateway(keycloak, prefect_server, prometheus, elasticsearch, tmp_path_factory) -> Iterator[Gateway]:
    catalog = Catalog(f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/catalog.db")
    catalog.upgrade()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMS_WORK_POOL", "sms-gateway-idle")
        patch.setenv("SMS_ELASTICSEARCH_URL", elasticsearch.url)  # the monitoring API's peers
        with serve(keycloak, catalog, prometheus_url=prometheus.url) as served:
            yield served
    catalog.dispose()


def _spec() -> dict:
    """The gateway app's OpenAPI spec (known at import: the schema drives the parametrization)."""
    settings = GatewaySettings(oidc_issuer="http://keycloak.invalid/realms/sms")
    return create_app(settings, catalog=Catalog("sqlite://")).openapi()


SPEC = _spec()
schema = schemathesis.openapi.from_dict(SPEC)


def test_the_served_spec_is_the_fuzzed_one(fuzzed_gateway):
    served = httpx.get(f"{fuzzed_gateway.url}/api/v1/openapi.json", timeout=30).json()
    assert served == SPEC
    assert {"/api/v1/scripts", "/api/v1/runs/{run_id}/stop", "/hooks/{hook_id}"} <= set(served["paths"])


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx(case, fuzzed_gateway):
    response = case.call_and_validate(
        base_url=fuzzed_gateway.url, headers=fuzzed_gateway.headers("adam"), checks=[not_a_server_error], timeout=60
    )
    STATUSES.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)


def test_the_fuzzing_got_past_authentication():
    """The token worked: every operation under /api/v1 answered something other than 401."""
    api = {operation: codes for operation, codes in STATUSES.items() if " /api/v1/" in operation}
    assert len(api) >= 25, sorted(STATUSES)
    assert not [operation for operation, codes in api.items() if codes == {401}]
    assert any(code < 300 for codes in api.values() for code in codes)
