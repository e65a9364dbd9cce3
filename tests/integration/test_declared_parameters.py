"""Declared script parameters against real peers: the Prefect deployment's schema, Prefect's server
refusing invalid values, the flow refusing them, values arriving byte for byte on a real sshd, a
secret that never reaches Prefect's logs, the run record or the audit trail, and the REST API."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, LogFilter, LogFilterFlowRunId

from flows.run_script import run_script
from sms_plugin import deploy, hosts, run_secrets, runs, scripts
from sms_plugin.catalog import ScriptSpec, get_run, list_audit
from sms_plugin.errors import InvalidInput, NotFound
from tests.integration.conftest import block_of
from tests.integration.gateway_fixtures import Gateway, gateway  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

IDLE_POOL = "sms-parameters-idle"
SECRET = f"pw-{uuid.uuid4().hex}"
HOSTILE = "it's $(id) `id` \"q\" ; | & * \n ü -x"
#: Prints each argument and the secret's value as hex, one per line.
PRINT_ALL = 'for a in "$@"; do printf "%s" "$a" | od -An -v -tx1 | tr -d " \\n"; echo; done\n' \
            'printf "%s" "$SMS_SECRET_TOKEN" | od -An -v -tx1 | tr -d " \\n"; echo\n'
DECLARED = [
    {"name": "label", "description": "free text"},
    {"name": "days", "type": "integer", "default": 7},
    {"name": "mode", "choices": ["full", "quick"], "required": True},
    {"name": "dry_run", "type": "boolean"},
    {"name": "token", "secret": True},
]


@pytest.fixture(scope="module")
async def script_name(catalog, prefect_server, ssh_server) -> str:
    host = f"params-ssh-{uuid.uuid4().hex[:8]}"
    await hosts.add(host, block_of(ssh_server))
    name = f"params-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMS_WORK_POOL", IDLE_POOL)
        spec = ScriptSpec.parse({"name": name, "interpreter": "bash", "host": host, "parameters": DECLARED})
        await scripts.add(catalog, spec, PRINT_ALL, author="tests")
    return name


async def test_the_deployment_schema_lists_the_declared_parameters(script_name):
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deploy.deployment_name(script_name))
    assert deployment.enforce_parameter_schema
    schema = deployment.parameter_openapi_schema
    declared = schema["properties"]["parameters"]
    assert list(declared["properties"]) == ["label", "days", "mode", "dry_run", "token"]
    assert declared["properties"]["days"] == {"type": "integer", "title": "days", "default": 7}
    assert declared["properties"]["mode"]["enum"] == ["full", "quick"]
    assert declared["properties"]["token"]["format"] == "password"
    assert declared["required"] == ["mode"] and "args" not in schema["properties"]


@pytest.mark.parametrize(
    "parameters",
    [
        {"parameters": {"mode": "slow"}},
        {"parameters": {"mode": "full", "days": "seven"}},
        {"parameters": {"mode": "full", "other": 1}},
        {"parameters": {"days": 3}},
        {"parameters": {"mode": "full", "label": "a\0b"}},
        {"script": "another-script", "parameters": {"mode": "full"}},
    ],
    ids=["choice", "type", "unknown", "required", "nul", "other-script"],
)
async def test_prefect_server_refuses_invalid_values_at_create_flow_run(script_name, parameters):
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deploy.deployment_name(script_name))
        with pytest.raises(Exception) as refused:  # noqa: PT011 - the client raises per status
            await client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        assert "409" in str(refused.value), refused.value
        created = await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
    assert created == []


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"parameters": {"mode": "slow"}}, "parameter 'mode' must be one of"),
        ({"parameters": {"mode": "full"}, "args": ["--days=1"]}, "give them by name"),
        ({"parameters": {"days": "3"}}, "parameter 'mode' is required"),
    ],
)
async def test_the_flow_refuses_invalid_values(catalog, script_name, given, message):
    state = await run_script(script=script_name, return_state=True, **given)
    assert state.is_failed() and message in state.message, state.message


async def test_a_valid_run_passes_the_values_byte_for_byte_and_the_secret_stays_out_of_logs_and_records(
    catalog, script_name
):
    state = await run_script(
        script=script_name, parameters={"label": HOSTILE, "mode": "quick", "dry_run": True, "token": SECRET},
        return_state=True,
    )
    assert state.is_completed(), state.message
    run_id = str(state.state_details.flow_run_id)
    with catalog.session() as session:
        record = get_run(session, run_id)
        lines = [line.split(": ", 1)[1] for line in record.output_tail.splitlines()]
        assert [bytes.fromhex(h).decode() for h in lines] == [
            f"--label={HOSTILE}", "--days=7", "--mode=quick", "--dry_run", SECRET
        ]
        # the record's output tail shows the script's own output, where this script chose to print it hex-encoded
        assert SECRET not in json.dumps({c: str(getattr(record, c)) for c in record.__table__.columns.keys()})
    async with get_client() as client:
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
        stored = (await client.read_flow_run(state.state_details.flow_run_id)).parameters
    assert logs and not [log.message for log in logs if SECRET in log.message]
    assert stored["parameters"]["token"] == "********" and SECRET not in json.dumps(stored)


async def test_starting_a_run_checks_values_before_prefect_is_asked(catalog, script_name):
    with pytest.raises(InvalidInput, match="parameter 'days' must be an integer"):
        await runs.start(catalog, script_name, parameters={"mode": "full", "days": "x"}, trigger="sdk", user="t")


async def test_the_rest_api_refuses_naming_the_parameter_and_audits_no_secret(gateway: Gateway, script_name):  # noqa: F811
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        bad = await http.post(f"/api/v1/scripts/{script_name}/runs", headers=gateway.headers("otto"),
                              json={"parameters": {"mode": "slow", "token": SECRET}})
        args = await http.post(f"/api/v1/scripts/{script_name}/runs", headers=gateway.headers("otto"),
                               json={"args": ["--mode=full"]})
        good = await http.post(f"/api/v1/scripts/{script_name}/runs", headers=gateway.headers("otto"),
                               json={"parameters": {"mode": "full", "days": 3, "token": SECRET}})
        shown = await http.get(f"/api/v1/scripts/{script_name}", headers=gateway.headers("viola"))
    assert bad.status_code == 422 and "parameter 'mode'" in bad.json()["detail"], bad.text
    assert args.status_code == 422 and "give them by name" in args.json()["detail"], args.text
    assert good.status_code == 201, good.text
    assert [p["name"] for p in shown.json()["parameters"]] == ["label", "days", "mode", "dry_run", "token"]
    with gateway.catalog.session() as session:
        events = list_audit(session, action="api.run.start", object_name=script_name, limit=10)
    assert len(events) == 3 and all(SECRET not in json.dumps(e.detail) for e in events)
    assert events[0].detail["parameters"] == ["days", "mode", "token"]
    # The run waits in a pool no worker serves: what Prefect stores holds a reference, not the secret.
    async with get_client() as client:
        stored = (await client.read_flow_run(uuid.UUID(good.json()["run_id"]))).model_dump_json()
        reference = json.loads(stored)["parameters"]["parameters"]["token"]
        block_name = reference.removeprefix(run_secrets.REFERENCE_PREFIX)
        masked = await client.read_block_document_by_name(block_name, "secret", include_secrets=False)
        revealed = await client.read_block_document_by_name(block_name, "secret", include_secrets=True)
    assert reference.startswith(run_secrets.REFERENCE_PREFIX) and SECRET not in stored
    assert SECRET not in masked.model_dump_json() and json.loads(revealed.data["value"])["value"] == SECRET


async def test_a_stashed_secret_reaches_the_script_once_and_only_its_own(catalog, script_name):
    async with get_client() as client:
        [first] = (await run_secrets.stash(client, script_name, {"token": SECRET}, {"token"})).values()
        [foreign] = (await run_secrets.stash(client, "another-script", {"token": SECRET}, {"token"})).values()
    state = await run_script(script=script_name, parameters={"mode": "full", "token": first}, return_state=True)
    assert state.is_completed(), state.message
    with catalog.session() as session:
        record = get_run(session, str(state.state_details.flow_run_id))
    assert bytes.fromhex(record.output_tail.splitlines()[-1].split(": ", 1)[1]).decode() == SECRET
    again = await run_script(script=script_name, parameters={"mode": "full", "token": first}, return_state=True)
    assert again.is_failed() and "gone" in again.message, again.message
    stolen = await run_script(script=script_name, parameters={"mode": "full", "token": foreign}, return_state=True)
    assert stolen.is_failed() and "another script" in stolen.message, stolen.message
    for state in (again, stolen):  # nothing ran: no run record
        with catalog.session() as session, pytest.raises(NotFound):
            get_run(session, str(state.state_details.flow_run_id))
