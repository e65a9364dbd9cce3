"""Command injection through a run's environment and arguments, tried at every door.

Each payload would run code before (or instead of) the approved script if it reached the host:
``BASH_ENV``/``ENV`` name a file the shell sources, ``PYTHONPATH`` a folder whose
``sitecustomize.py`` Python imports, ``--split-string`` makes ``env`` run another command,
``SMS_RUN_ID`` forges SMS's own run marker. Every test asserts the refusal AND that nothing
happened: no marker file written by the payload, no upload left, no run record, no flow run.
Real peers: sshd (bash, sh, ksh, python3 on it), the worker's own machine, a Prefect server, the
gateway with Keycloak tokens, the ``sms`` command.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from blocks.hosts import LocalHost
from flows.run_script import run_script
from sms_plugin import deploy, hosts, runs, scripts
from sms_plugin.catalog import ScriptSpec, get_run, list_audit
from sms_plugin.environment import env_name_problem
from sms_plugin.errors import InvalidInput, NotFound
from sms_plugin.execution import ScriptRun, execute
from sms_plugin.transports.base import Transport
from sms_plugin.transports.ssh import SSHTransport
from tests.integration.conftest import block_of
from tests.integration.gateway_fixtures import Gateway, gateway  # noqa: F401 - fixture
from tests.load import FULL_LOAD

pytestmark = pytest.mark.integration

SMS = str(Path(sys.executable).with_name("sms"))
IDLE_POOL = "sms-attacks-idle"  # no worker serves it: a run that got through would stay Scheduled
INTERPRETERS = ["bash", "sh", "ksh", "python3"]
APPROVED = {"python3": "print('approved')\n"} | {shell: "echo approved\n" for shell in ("bash", "sh", "ksh")}


@pytest.fixture
def trap() -> Iterator[Path]:
    """A folder both this process and sshd's user can write: payloads, and the markers they would leave."""
    folder = Path(f"/tmp/sms-attack-{uuid.uuid4().hex[:10]}")
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    (folder / "payload.sh").write_text(f"touch {folder}/marker\n")
    (folder / "sitecustomize.py").write_text(f"open('{folder}/marker', 'w').close()\n")
    (folder / "payload.sh").chmod(0o755)
    yield folder
    subprocess.run(["rm", "-rf", str(folder)], check=False)


def injections(trap: Path) -> dict[str, dict[str, str]]:
    """Variables that run the payload (or forge SMS's marker), and spellings that try to slip through."""
    payload = str(trap / "payload.sh")
    return {
        "BASH_ENV": {"BASH_ENV": payload},
        "ENV": {"ENV": payload},
        "PYTHONPATH": {"PYTHONPATH": str(trap)},
        "PYTHONSTARTUP": {"PYTHONSTARTUP": str(trap / "sitecustomize.py")},
        "PYTHONWARNINGS": {"PYTHONWARNINGS": "ignore::sitecustomize.Warning", "X": "1"},
        "LD_PRELOAD": {"LD_PRELOAD": str(trap / "evil.so")},
        "split-string": {"--split-string": f"sh {payload}"},
        "dash-S": {"-S": f"sh {payload}"},
        "SMS_RUN_ID": {"SMS_RUN_ID": "fake"},
        "lowercase bash_env": {"bash_env": payload},
        "mixed-case PythonPath": {"PythonPath": str(trap)},
        "name with =": {"BASH_ENV=x": payload},
        "name with space": {"A B": payload},
        "unicode name": {"ÄBC": payload},
        "NUL in value": {"REPORT_DIR": "a\0b"},
    }


CASES = list(injections(Path("/x")))


def _scratch_files(transport: Transport, scratch: str) -> set[str]:
    root = Path(scratch)
    return {p.name for p in root.iterdir()} if root.exists() else set()


async def test_the_payloads_are_real_when_run_directly(trap):
    """The control: the payload does write its marker, so a missing marker below means it never ran."""
    subprocess.run(["sh", str(trap / "payload.sh")], check=True)
    assert (trap / "marker").exists()


@pytest.mark.parametrize("interpreter", INTERPRETERS)
@pytest.mark.parametrize("case", CASES)
async def test_transports_refuse_before_uploading_and_nothing_runs(transport, trap, interpreter, case):
    env = injections(trap)[case]
    scratch = await transport.scratch_dir()
    before = _scratch_files(transport, scratch)
    with pytest.raises(InvalidInput, match="environment"):
        await execute(
            transport, ScriptRun(interpreter=interpreter, content=APPROVED[interpreter], env=env, run_id=str(uuid.uuid4())),
            on_started=_never, on_output=_never,
        )
    assert not (trap / "marker").exists()
    assert _scratch_files(transport, scratch) == before


@pytest.mark.parametrize("args", [["a\0b"], ["ok", "\0"], ["x" * 10 + "\0"]])
async def test_an_argument_with_nul_is_refused_before_anything_is_uploaded(transport, args):
    scratch = await transport.scratch_dir()
    before = _scratch_files(transport, scratch)
    with pytest.raises(InvalidInput, match="NUL"):
        await execute(transport, ScriptRun(interpreter="sh", content="echo hi\n", args=args),
                      on_started=_never, on_output=_never)
    assert _scratch_files(transport, scratch) == before


async def _never(*_: object) -> None:
    raise AssertionError("nothing may start")


ENV_NAMES = st.one_of(
    st.text(min_size=1, max_size=16),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True),
    st.builds(lambda p, r: p + r, st.sampled_from(["-", "--", "BASH_", "PYTHON", "LD_", "SMS_", "ld_", "Bash_Env"]),
              st.text(max_size=8)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=ENV_NAMES, value=st.text(max_size=30))
async def test_generated_names_and_values_either_arrive_unchanged_or_are_refused(transport, trap, name, value):
    scratch = await transport.scratch_dir()
    before = _scratch_files(transport, scratch)
    run = ScriptRun(interpreter="sh", content=f'printf "%s" "${{{name}}}" | od -An -v -tx1 | tr -d " \\n"; echo\n'
                    if env_name_problem(name) is None else "echo never\n", env={name: value})
    lines: list[str] = []

    async def output(_stream: str, message: str) -> None:
        lines.extend(message.split("\n"))

    async def started(_pid: int | None) -> None:
        return None

    if env_name_problem(name) is None and "\0" not in value and value.encode("utf-8", "replace") == value.encode("utf-8", "surrogatepass"):
        result = await execute(transport, run, on_started=started, on_output=output)
        assert result.exit_code == 0
        assert bytes.fromhex(lines[0]).decode() == value
    else:
        with pytest.raises(InvalidInput):
            await execute(transport, run, on_started=started, on_output=output)
        assert lines == []
    assert _scratch_files(transport, scratch) == before
    assert not (trap / "marker").exists()


# --------------------------------------------------------------------------- the flow, the services, the faces


@pytest.fixture(scope="module")
async def ssh_host_name(prefect_server, ssh_server) -> str:
    name = f"attack-ssh-{uuid.uuid4().hex[:8]}"
    await hosts.add(name, block_of(ssh_server))
    return name


@pytest.fixture(scope="module")
async def deployed(catalog, ssh_host_name) -> Iterator[dict[str, str]]:
    """One deployed script per interpreter on the sshd, allowing REPORT_DIR only, in a pool no worker serves."""
    names = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMS_WORK_POOL", IDLE_POOL)
        for interpreter in INTERPRETERS:
            name = f"attack-{interpreter}-{uuid.uuid4().hex[:8]}"
            spec = ScriptSpec(name=name, interpreter=interpreter, host=ssh_host_name, allowed_env=["REPORT_DIR"])
            await scripts.add(catalog, spec, APPROVED[interpreter], author="tests")
            names[interpreter] = name
        yield names


def _smstest_uploads() -> set[str]:
    folder = Path(pwd.getpwnam("smstest").pw_dir) / ".sms" / "run"
    return set(os.listdir(folder)) if folder.exists() else set()


async def _flow_runs_of(script: str) -> int:
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deploy.deployment_name(script))
        found = await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
    return len(found)


#: The flow checks a run's inputs before it looks at the host or the interpreter, so in CI each case
#: runs once, the interpreters taking turns; SMS_FULL_LOAD=1 runs every case with every interpreter.
FLOW_CASES = (
    [(case, interpreter) for case in CASES for interpreter in INTERPRETERS]
    if FULL_LOAD
    else [(case, INTERPRETERS[n % len(INTERPRETERS)]) for n, case in enumerate(CASES)]
)


@pytest.mark.parametrize(("case", "interpreter"), FLOW_CASES)
async def test_the_flow_refuses_whatever_created_the_run(catalog, deployed, trap, interpreter, case):
    """The flow is the last door (a run from the Prefect UI or API, a schedule): it refuses too."""
    before = _smstest_uploads()
    state = await run_script(script=deployed[interpreter], env=injections(trap)[case], return_state=True)
    assert state.is_failed() and "refused its inputs, nothing ran" in (state.message or "")
    assert not (trap / "marker").exists()
    assert _smstest_uploads() == before
    with catalog.session() as session, pytest.raises(NotFound):
        get_run(session, str(state.state_details.flow_run_id))


@pytest.mark.parametrize("case", CASES)
async def test_starting_a_run_refuses_and_creates_no_flow_run(catalog, deployed, trap, case):
    """What the SDK and the CLI call: refused before Prefect is asked for anything."""
    with pytest.raises(InvalidInput):
        await runs.start(catalog, deployed["bash"], env=injections(trap)[case], trigger="sdk", user="mallory")
    assert await _flow_runs_of(deployed["bash"]) == 0


@pytest.mark.parametrize("case", ["SMS_RUN_ID", "split-string", "BASH_ENV", "NUL in value"])
async def test_prefect_server_itself_refuses_the_environment(deployed, trap, case):
    """A flow run created straight through Prefect's API: the deployment's schema is enforced."""
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deploy.deployment_name(deployed["bash"]))
        with pytest.raises(Exception) as refused:  # noqa: PT011 - Prefect's client raises per status
            await client.create_flow_run_from_deployment(deployment.id, parameters={"env": injections(trap)[case]})
    assert "409" in str(refused.value) or "Validation" in str(refused.value), refused.value
    assert await _flow_runs_of(deployed["bash"]) == 0


def test_the_cli_refuses_a_forged_run_marker(deployed, prefect_server):
    done = subprocess.run([SMS, "run", deployed["sh"], "-e", "SMS_RUN_ID=fake"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PREFECT_API_URL": prefect_server.api_url})
    assert done.returncode != 0
    assert "SMS_RUN_ID" in done.stderr and "SMS itself" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- the REST API


@pytest.mark.parametrize("case", ["BASH_ENV", "split-string", "SMS_RUN_ID", "PYTHONPATH", "name with =", "NUL in value"])
async def test_the_rest_api_answers_422_and_starts_nothing(gateway: Gateway, trap, case):  # noqa: F811
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMS_WORK_POOL", IDLE_POOL)
        host = f"attack-local-{uuid.uuid4().hex[:6]}"
        await hosts.add(host, LocalHost(admins_only=False))  # opened: the env check must refuse, not the host
        name = f"attack-rest-{uuid.uuid4().hex[:8]}"
        await scripts.add(gateway.catalog, ScriptSpec(name=name, interpreter="sh", host=host, allowed_env=["REPORT_DIR"]),
                          "echo approved\n", author="tests")
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        reply = await http.post(f"/api/v1/scripts/{name}/runs", json={"env": injections(trap)[case]},
                                headers=gateway.headers("otto"))
        args_reply = await http.post(f"/api/v1/scripts/{name}/runs", json={"args": ["a\0b"]},
                                     headers=gateway.headers("otto"))
    assert reply.status_code == 422, reply.text
    assert "environment" in reply.json()["detail"] or "does not let a run set" in reply.json()["detail"]
    assert args_reply.status_code == 422 and "NUL" in args_reply.json()["detail"], args_reply.text
    assert await _flow_runs_of(name) == 0
    assert not (trap / "marker").exists()
    with gateway.catalog.session() as session:
        events = list_audit(session, action="api.run.start", object_name=name, limit=5)
        assert [e.outcome for e in events] == ["error", "error"]
        assert all("a\0b" not in str(e.detail) for e in events)
