"""How SMS's Kafka clients reach the brokers: TLS and the SASL/SCRAM identity (docs/tls.md#kafka).

Settings (the tree's ``events`` group, from the environment):

- ``SMS_KAFKA_SECURITY_PROTOCOL``: Kafka's ``security.protocol``: ``PLAINTEXT``, ``SSL``,
  ``SASL_PLAINTEXT`` or ``SASL_SSL``. Default: ``PLAINTEXT`` when every broker of
  ``SMS_KAFKA_BOOTSTRAP`` is on loopback (``sms up``), else ``SSL`` (``SASL_SSL`` with a user).
- ``SMS_KAFKA_SASL_USERNAME`` / ``SMS_KAFKA_SASL_PASSWORD``: the SCRAM identity (a password is
  held as a secret and never logged).
- ``SMS_KAFKA_SASL_MECHANISM``: ``SCRAM-SHA-512`` (default) or ``SCRAM-SHA-256``.

Over TLS the broker's certificate is verified (chain and host name) against ``SMS_CA_BUNDLE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from sms_plugin import tls
from sms_plugin.errors import SMSError
from sms_plugin.listening import is_loopback
from sms_plugin.settings import current

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")


def _on_loopback(bootstrap: str) -> bool:
    hosts = [server.strip().rsplit(":", 1)[0] for server in bootstrap.split(",") if server.strip()]
    return bool(hosts) and all(is_loopback(host) for host in hosts)


@dataclass(frozen=True)
class KafkaSecurity:
    """The security settings of one set of brokers (``bootstrap``); see the module's docstring."""

    bootstrap: str
    protocol: str | None = field(default_factory=lambda: current().events.security_protocol)
    username: str | None = field(default_factory=lambda: current().events.sasl_username)
    password: SecretStr | None = field(default_factory=lambda: current().events.sasl_password, repr=False)
    mechanism: str = field(default_factory=lambda: current().events.sasl_mechanism)

    def chosen_protocol(self) -> str:
        """The protocol given, or the default for these brokers (see the module's docstring)."""
        if self.protocol:
            chosen = self.protocol.upper()
            if chosen not in PROTOCOLS:
                raise SMSError(f"SMS_KAFKA_SECURITY_PROTOCOL={self.protocol!r}: use one of {', '.join(PROTOCOLS)}")
            return chosen
        plain = _on_loopback(self.bootstrap)
        if self.username:
            return "SASL_PLAINTEXT" if plain else "SASL_SSL"
        return "PLAINTEXT" if plain else "SSL"

    def client_config(self) -> dict[str, Any]:
        """The librdkafka settings of these choices (it holds the password: never log it)."""
        protocol = self.chosen_protocol()
        config: dict[str, Any] = {"security.protocol": protocol}
        if not protocol.endswith("SSL") and not _on_loopback(self.bootstrap):
            tls.warn_clear_text(f"Kafka at {self.bootstrap}", f"SMS_KAFKA_SECURITY_PROTOCOL={protocol}")
        if protocol.endswith("SSL"):
            config.update({
                "ssl.ca.location": tls.ca_location(),
                "enable.ssl.certificate.verification": True,
                "ssl.endpoint.identification.algorithm": "https",
            })
        if protocol.startswith("SASL"):
            if self.mechanism not in MECHANISMS:
                raise SMSError(f"SMS_KAFKA_SASL_MECHANISM={self.mechanism!r}: use one of {', '.join(MECHANISMS)}")
            if not self.username or self.password is None:
                raise SMSError(f"security protocol {protocol} needs SMS_KAFKA_SASL_USERNAME and SMS_KAFKA_SASL_PASSWORD")
            config.update({
                "sasl.mechanism": self.mechanism,
                "sasl.username": self.username,
                "sasl.password": self.password.get_secret_value(),
            })
        elif self.username:
            raise SMSError(
                f"SMS_KAFKA_SASL_USERNAME is set but the security protocol is {protocol}: "
                "use SMS_KAFKA_SECURITY_PROTOCOL=SASL_SSL"
            )
        return config
