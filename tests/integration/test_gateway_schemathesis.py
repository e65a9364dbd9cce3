"""schemathesis against the gateway's OpenAPI spec with an admin token: no operation answers 5xx.

The gateway runs over a catalog of its own (generated data never touches other tests' rows),
and scripts it deploys go to a work pool no worker serves (generated runs never execute).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from sms_plugin.catalog import Catalog
from tests.integration.gateway_fixtures import Gateway, serve

pytestmark = pytest.mark.integration

EXAMPLES = 6


@pytest.fixture(scope="module")
def fuzzed_gateway(keycloak, prefect_server, tmp_path_factory) -> Iterator[Gateway]:
    catalog = Catalog(f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/catalog.db")
    catalog.upgrade()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMS_WORK_POOL", "sms-gateway-idle")
        with serve(keycloak, catalog) as served:
            yield served
    catalog.dispose()


@pytest.fixture(scope="module")
def api_schema(fuzzed_gateway: Gateway):
    return schemathesis.openapi.from_url(f"{fuzzed_gateway.url}/api/v1/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx(case, fuzzed_gateway):
    case.call_and_validate(
        base_url=fuzzed_gateway.url, headers=fuzzed_gateway.headers("adam"), checks=[not_a_server_error], timeout=60
    )
