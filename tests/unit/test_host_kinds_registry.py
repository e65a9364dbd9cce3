"""The registry of host kinds: one contract, fields declared once on the block, inputs and public
views derived from them, secrets never in a view, Prefect block slugs unchanged."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import SecretStr, TypeAdapter, ValidationError

from sms_plugin.errors import InvalidInput
from sms_plugin.host_kinds import (
    KINDS,
    HostKind,
    HostRequest,
    LocalHost,
    SSHHost,
    WindowsHost,
    build,
    from_request,
    public_view,
    request_fields,
)
from sms_plugin.transports.psrp import WinRMTarget
from sms_plugin.transports.ssh import SSHTarget

SECRETS = ("k3y-material", "pa55phrase", "pa55word", "w1n-pa55word")
EXAMPLES: dict[str, HostKind] = {
    "ssh": SSHHost(address="10.0.0.5", username="ops", private_key=SecretStr("k3y-material"),
                   private_key_passphrase=SecretStr("pa55phrase"), password=SecretStr("pa55word"),
                   host_keys=["ssh-ed25519 AAAA"], labels=["prod-eu"], max_parallel_sessions=3),
    "local": LocalHost(labels=["lab"], admins_only=False),
    "windows": WindowsHost(address="10.0.0.7", username="CORP\\svc", password=SecretStr("w1n-pa55word"),
                           scheme="https", auth="basic", labels=["prod-eu", "win"]),
}


def test_the_registry_holds_every_kind_under_its_unchanged_prefect_block_type():
    assert {name: (kind.block, kind.block.get_block_type_slug(), kind.block.get_block_type_name())
            for name, kind in KINDS.items()} == {
        "ssh": (SSHHost, "sms-ssh-host", "SMS SSH Host"),
        "local": (LocalHost, "sms-local-host", "SMS Local Host"),
        "windows": (WindowsHost, "sms-windows-host", "SMS Windows Host"),
    }


@pytest.mark.parametrize("name", list(KINDS))
def test_every_kind_keeps_the_contract(name):
    block = KINDS[name].block
    assert issubclass(block, HostKind) and block.kind == name
    assert {"labels", "admins_only", "max_parallel_sessions"} <= set(block.model_fields)
    assert not block.__abstractmethods__  # describe, open_transport and check are implemented


@pytest.mark.parametrize("name", list(KINDS))
def test_the_request_model_is_the_block_fields_minus_the_worker_side_ones(name):
    kind = KINDS[name]
    request_fields_ = dict(kind.request.model_fields)
    assert request_fields_.pop("name").is_required() and request_fields_.pop("overwrite").default is False
    assert request_fields_.pop("kind").annotation.__args__ == (name,)
    expected = {field: info for field, info in kind.block.model_fields.items() if field not in kind.block.worker_side_fields}
    assert {f: (i.annotation, i.default, i.metadata) for f, i in request_fields_.items()} == {
        f: (i.annotation, i.default, i.metadata) for f, i in expected.items()
    }


@pytest.mark.parametrize("name", list(KINDS))
def test_the_public_view_carries_no_secret(name):
    view = public_view(EXAMPLES[name])
    assert set(view) == set(KINDS[name].block.model_fields) - KINDS[name].secret_fields
    assert not any(secret in repr(view) for secret in SECRETS)
    assert view["labels"] == EXAMPLES[name].labels


def test_the_secret_fields_are_the_secretstr_ones():
    assert {name: kind.secret_fields for name, kind in KINDS.items()} == {
        "ssh": {"private_key", "private_key_passphrase", "password"}, "local": frozenset(), "windows": {"password"},
    }


@pytest.mark.parametrize("name", list(KINDS))
def test_a_block_round_trips_through_the_rest_request(name):
    block = EXAMPLES[name]
    body = {"name": "h-1", "kind": name, **request_fields(block)}
    request = TypeAdapter(HostRequest).validate_python(body)
    assert type(request) is KINDS[name].request
    rebuilt = from_request(request)
    assert type(rebuilt) is type(block)
    assert rebuilt.model_dump(mode="json", context=None) == block.model_dump(mode="json")
    for secret in KINDS[name].secret_fields:
        assert getattr(rebuilt, secret) == getattr(block, secret)


def test_worker_side_fields_are_refused_by_the_rest_request_and_not_sent_to_it():
    with pytest.raises(ValidationError, match="run_as"):
        TypeAdapter(HostRequest).validate_python({"name": "h", "kind": "local", "run_as": "root"})
    with pytest.raises(InvalidInput, match="run_as can only be set where the worker runs"):
        request_fields(LocalHost(run_as="batch"))
    assert "run_as" not in request_fields(LocalHost())


def test_build_refuses_unknown_kinds_bad_labels_and_basic_over_http_readably():
    with pytest.raises(InvalidInput, match="unknown host kind 'mainframe'; known kinds: ssh, local, windows"):
        build("mainframe", {})
    with pytest.raises(InvalidInput, match=r"invalid host label\(s\) \['no spaces'\]"):
        build("local", {"labels": ["no spaces"]})
    with pytest.raises(InvalidInput, match="https only"):
        build("windows", {"address": "w", "username": "u", "password": "p", "auth": "basic"})
    with pytest.raises(InvalidInput, match="address: Field required"):
        build("ssh", {"username": "u"})


def test_build_wraps_plain_secrets():
    block = build("ssh", {"address": "a", "username": "u", "password": "pa55word"})
    assert isinstance(block.password, SecretStr) and "pa55word" not in repr(block)


def test_transport_targets_are_filled_from_the_block_fields_of_the_same_names():
    ssh, windows = EXAMPLES["ssh"], EXAMPLES["windows"]
    assert dataclasses.asdict(ssh.target()) == {
        field.name: getattr(ssh, field.name).get_secret_value() if field.name in KINDS["ssh"].secret_fields
        else getattr(ssh, field.name) for field in dataclasses.fields(SSHTarget)
    }
    target = windows.target()
    assert isinstance(target, WinRMTarget) and target.password == "w1n-pa55word"
    assert (target.address, target.scheme, target.auth, target.username) == ("10.0.0.7", "https", "basic", "CORP\\svc")
    assert windows.describe() == "CORP\\svc@https://10.0.0.7:5986"


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("ssh", "address", "ã"), ("ssh", "address", "a b"), ("ssh", "username", "u\x15"), ("ssh", "host_keys", [" "]),
        ("ssh", "host_keys", ["ssh-ed25519"]), ("ssh", "shell", "ø"), ("ssh", "shell", "sh"),
        ("ssh", "connect_timeout", 1e308), ("windows", "address", "x\ny"), ("windows", "username", "a\x7fb"),
        ("windows", "connect_timeout", 0),
    ],
)
def test_connection_fields_refuse_what_a_resolver_a_shell_or_a_log_would_misread(kind, field, value):
    """Found by fuzzing the REST API: such a host was saved, then broke `sms host list` and the
    exporter's probes of every host. The block refuses it, so every face does."""
    fields = {**request_fields(EXAMPLES[kind]), field: value}
    with pytest.raises(InvalidInput):
        build(kind, fields)
