"""Every ``SMS_*`` environment variable the code names is documented in the README or docs/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE = ("sms_plugin", "flows", "blocks")
VARIABLE = re.compile(r"^SMS_[A-Z0-9_]*[A-Z0-9]$")


def variables_in_code() -> dict[str, str]:
    """Each string constant that is an ``SMS_*`` name, with the first file that names it."""
    found: dict[str, str] = {}
    for folder in CODE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and VARIABLE.match(node.value):
                    found.setdefault(node.value, str(path.relative_to(ROOT)))
    return found


def documentation() -> str:
    return "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def test_the_scan_finds_the_variables_it_must() -> None:
    names = variables_in_code()
    assert {"SMS_DATABASE_URL", "SMS_HOME", "SMS_OIDC_ISSUER", "SMS_RUN_ID"} <= names.keys()


def test_every_sms_variable_is_documented() -> None:
    docs = documentation()
    missing = {name: where for name, where in variables_in_code().items() if not re.search(rf"\b{name}\b", docs)}
    assert not missing, f"SMS_* variables read by the code but named nowhere in README.md or docs/: {missing}"


# ------------------------------------------------------------------ the settings tree and its tables


def table_rows(path: Path, heading: str) -> list[list[str]]:
    """The cells of the first table after ``heading`` in ``path``."""
    text = path.read_text().split(heading, 1)[1]
    rows = []
    for line in text.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # no header, no rule


def named(cell: str) -> set[str]:
    return {name for name in re.findall(r"`(SMS_[A-Z0-9_]+)`", cell) if not name.endswith("_")}


def tree_fields() -> dict[str, str]:
    """Every variable of the settings tree, with its ``group.field``."""
    from sms_plugin.gateway.config import GatewaySettings
    from sms_plugin.settings import Settings

    groups = {name: info.annotation for name, info in Settings.model_fields.items()} | {"gateway": GatewaySettings}
    return {info.validation_alias: f"{group}.{field}" for group, model in groups.items()
            for field, info in model.model_fields.items()}


def test_the_readme_table_names_every_tree_field_with_its_place_and_nothing_else():
    from sms_plugin.settings import CLI_OPTION_VARIABLES

    fields = tree_fields()
    readme = {}
    for cells in table_rows(ROOT / "README.md", "## Configuration"):
        if cells[1] != "`gateway`":  # the gateway's group: its own table in docs/gateway.md
            readme |= dict.fromkeys(named(cells[0]), cells[1].strip("`"))
    gateway = {name for cells in table_rows(ROOT / "docs" / "gateway.md", "## Settings") for name in named(cells[0])}
    documented = readme.keys() | gateway
    assert documented - set(CLI_OPTION_VARIABLES) == fields.keys(), (
        f"not in the tree: {sorted(documented - fields.keys() - set(CLI_OPTION_VARIABLES))}; "
        f"not documented: {sorted(fields.keys() - documented)}")
    wrong = {name: (place, fields[name]) for name, place in readme.items() if name in fields and place != fields[name]}
    assert not wrong, f"the README names another field than the tree: {wrong}"
    assert gateway == {name for name, place in fields.items() if place.startswith("gateway.")}


def test_the_tree_reads_each_variable_once_and_a_bad_value_names_it(monkeypatch):
    from sms_plugin import settings
    from sms_plugin.errors import SMSError

    monkeypatch.setenv("SMS_WORKER_STOP_SECONDS", "7.5")
    monkeypatch.setenv("SMS_EXPORTER_LOGIN_CHECK", "1")
    monkeypatch.setenv("SMS_WORKER_STARTING", "")  # empty: the default
    tree = settings.load()
    assert (tree.worker.stop_seconds, tree.exporter.login_check, tree.worker.starting) == (7.5, True, 32)
    with settings.installed(tree):
        monkeypatch.setenv("SMS_WORKER_STOP_SECONDS", "9")
        assert settings.current() is tree  # read once at the edge: later changes wait for the next read
    assert settings.current().worker.stop_seconds == 9
    monkeypatch.setenv("SMS_WORKER_TYPE", "process")
    with pytest.raises(SMSError, match="SMS_WORKER_TYPE"):
        settings.load()


def test_outside_an_edge_the_tree_is_read_again_only_when_an_sms_variable_changed(monkeypatch):
    from sms_plugin import settings

    monkeypatch.setenv("SMS_WORKER_STOP_SECONDS", "4")
    first = settings.current()
    monkeypatch.setenv("UNRELATED_TO_SMS", "x")
    assert settings.current() is first  # nothing of SMS's changed: the same tree, not parsed again
    monkeypatch.setenv("SMS_WORKER_STOP_SECONDS", "6")
    assert settings.current() is not first and settings.current().worker.stop_seconds == 6
    monkeypatch.delenv("SMS_WORKER_STOP_SECONDS")
    assert settings.current().worker.stop_seconds == settings.WorkerSettings().stop_seconds  # unset: the default again


def test_a_variable_named_like_a_field_is_not_a_setting(monkeypatch):
    """HOME, PORT, HOST... are not SMS's: each field is read from its own SMS_* variable only."""
    from sms_plugin import settings
    from sms_plugin.gateway.config import load_settings

    monkeypatch.delenv("SMS_HOME", raising=False)
    for name, value in {"HOME": "/nowhere-home", "PORT": "1", "HOST": "0.0.0.0", "POOL": "other", "SOURCE": "kafka",
                        "SMS_OIDC_ISSUER": "https://kc.example/realms/sms"}.items():
        monkeypatch.setenv(name, value)
    tree = settings.load()
    chosen = (str(tree.catalog.home), tree.exporter.port, tree.worker.pool, tree.exporter.source)
    assert chosen == ("~/.sms", 9478, "sms", "prefect")
    gateway = load_settings()
    assert (gateway.host, gateway.port) == ("127.0.0.1", 8443)
