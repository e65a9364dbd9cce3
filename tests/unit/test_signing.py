"""Webhook signatures, sealed secrets, the argument allow-list, and host labels."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from blocks.hosts import LocalHost
from sms_plugin.errors import InvalidInput
from sms_plugin.gateway.signing import (
    SignatureError,
    delivery_id,
    github_signature,
    map_arguments,
    seal,
    sms_signature,
    unseal,
    verify,
)
from sms_plugin.hosts import checked_labels

NOW = 1_800_000_000
BODY = b'{"ref": "main"}'


def test_sms_signature_is_hmac_sha256_of_timestamp_dot_body():
    expected = hmac.new(b"k", b"1800000000." + BODY, hashlib.sha256).hexdigest()
    assert sms_signature("k", NOW, BODY) == f"sha256={expected}"
    headers = {"x-sms-timestamp": str(NOW), "x-sms-signature": f"sha256={expected}"}
    assert verify("k", headers, BODY, now=NOW + 299) == expected


@pytest.mark.parametrize(
    ("headers", "now", "message"),
    [
        ({"x-sms-timestamp": str(NOW), "x-sms-signature": sms_signature("other", NOW, BODY)}, NOW, "does not match"),
        ({"x-sms-timestamp": str(NOW), "x-sms-signature": sms_signature("k", NOW, BODY)}, NOW + 301, "tolerance"),
        ({"x-sms-timestamp": str(NOW), "x-sms-signature": sms_signature("k", NOW, BODY)}, NOW - 301, "tolerance"),
        ({"x-sms-timestamp": "yesterday", "x-sms-signature": "sha256=00"}, NOW, "Unix seconds"),
        ({"x-sms-signature": sms_signature("k", NOW, BODY)}, NOW, "Unix seconds"),
        ({"x-sms-timestamp": str(NOW + 1), "x-sms-signature": sms_signature("k", NOW, BODY)}, NOW, "does not match"),
        ({}, NOW, "unsigned"),
        ({"x-sms-timestamp": "١٧٦٤٥٤٦٠٠٠", "x-sms-signature": "sha256=00"}, NOW, "ASCII digits"),
        ({"x-sms-timestamp": "１７６４５４６０００", "x-sms-signature": "sha256=00"}, NOW, "ASCII digits"),
        ({"x-sms-timestamp": "¹²³", "x-sms-signature": "sha256=00"}, NOW, "ASCII digits"),
        ({"x-sms-timestamp": f"{NOW}\n", "x-sms-signature": "sha256=00"}, NOW, "ASCII digits"),
        ({"x-hub-signature-256": github_signature("other", BODY)}, NOW, "does not match"),
    ],
)
def test_bad_signatures(headers, now, message):
    with pytest.raises(SignatureError, match=message):
        verify("k", headers, BODY, now=now)


def test_github_signature_has_no_timestamp():
    headers = {"x-hub-signature-256": github_signature("k", BODY)}
    assert verify("k", headers, BODY, now=0) == hmac.new(b"k", BODY, hashlib.sha256).hexdigest()


def test_delivery_id_from_either_header():
    assert delivery_id({"x-github-delivery": "gh"}, "fallback") == "gh"
    assert delivery_id({"x-sms-delivery": "s" * 300}, "fallback") == "s" * 200
    assert delivery_id({}, "fallback") == "fallback"


def test_arguments_come_only_from_allowed_fields_and_values():
    payload = {"ref": "refs/heads/main", "n": 3, "ok": True, "deep": {"name": "ada"}, "cmd": "rm -rf /"}
    spec = [{"field": "ref"}, {"field": "n"}, {"field": "ok"}, {"field": "deep.name", "pattern": "[a-z]+"}]
    assert map_arguments(payload, spec) == ["refs/heads/main", "3", "true", "ada"]
    with pytest.raises(InvalidInput, match="allowed pattern"):
        map_arguments(payload, [{"field": "cmd"}])
    with pytest.raises(InvalidInput, match="no field 'deep.missing'"):
        map_arguments(payload, [{"field": "deep.missing"}])
    with pytest.raises(InvalidInput, match="string, number or boolean"):
        map_arguments(payload, [{"field": "deep"}])
    with pytest.raises(InvalidInput, match="allowed pattern"):
        map_arguments({"v": "a\nb"}, [{"field": "v"}])


def test_sealed_secret_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("SMS_HOME", str(tmp_path))
    monkeypatch.delenv("SMS_WEBHOOK_KEY", raising=False)
    sealed = seal("top-secret")
    assert "top-secret" not in sealed and unseal(sealed) == "top-secret"
    assert (tmp_path / "webhook.key").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("SMS_WEBHOOK_KEY", "A" * 43 + "=")
    with pytest.raises(InvalidInput, match="cannot be decrypted"):
        unseal(sealed)


def test_host_labels():
    assert LocalHost(labels=["prod-eu", "EU.1"]).labels == ["prod-eu", "EU.1"]
    assert checked_labels(["a_b"]) == ["a_b"]
    with pytest.raises(InvalidInput, match="invalid host label"):
        checked_labels(["has space"])
    with pytest.raises(ValueError):
        LocalHost(labels=["-leading"])


@pytest.mark.parametrize("value", ["-rf", "--x", "-", "..", "../x", "a/../b", "a..b", "x y", "é"])
def test_the_default_pattern_refuses_options_parent_paths_and_other_characters(value):
    with pytest.raises(InvalidInput, match="allowed pattern"):
        map_arguments({"v": value}, [{"field": "v"}])


@pytest.mark.parametrize("value", ["refs/heads/main", "v1.2.3", "a-b", "user@example.org", "k=v,w", ""])
def test_the_default_pattern_keeps_ordinary_values(value):
    assert map_arguments({"v": value}, [{"field": "v"}]) == [value]
