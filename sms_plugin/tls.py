"""The trust every client link of SMS verifies its peers with (docs/tls.md).

``SMS_CA_BUNDLE`` names one PEM file of CA certificates; unset, the system's store is used.
Verification is always on: the certificate must chain to a trusted CA and name the host.
:func:`client_context` is the one TLS context of the HTTP links (Keycloak, Prometheus,
Elasticsearch, Prefect behind the gateway) and of MariaDB; Kafka's client (librdkafka) is given
:func:`ca_location`; Prefect's own clients get the bundle through :func:`prefect_trust`. A refused
certificate becomes :class:`CertificateRefused`, naming the link.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sms_plugin import settings
from sms_plugin.errors import ServiceError, SMSError

CA_BUNDLE_ENV = "SMS_CA_BUNDLE"

log = logging.getLogger("sms.tls")


class CertificateRefused(ServiceError):
    """A peer's TLS certificate did not verify against the trusted CAs; the message names the link."""


def ca_bundle() -> Path | None:
    """The PEM bundle of ``SMS_CA_BUNDLE``, or None for the system store; a missing file is an error."""
    value = settings.current().tls.ca_bundle
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise SMSError(f"{CA_BUNDLE_ENV}={value!r} is not a file: give the PEM file of the CA certificates SMS trusts")
    return path


@functools.cache
def _context(bundle: str | None, _modified: float) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=bundle)
    except ssl.SSLError as error:
        raise SMSError(f"{CA_BUNDLE_ENV}={bundle!r} holds no PEM CA certificate ({error.reason or error})") from None


def client_context() -> ssl.SSLContext:
    """A TLS client context that verifies the certificate chain and the host name against
    ``SMS_CA_BUNDLE`` (or the system store); one per bundle file and version, shared."""
    bundle = ca_bundle()
    return _context(str(bundle) if bundle else None, bundle.stat().st_mtime if bundle else 0.0)


def ca_location() -> str:
    """``ssl.ca.location`` for librdkafka: the bundle, or ``probe`` (the system's usual CA paths)."""
    bundle = ca_bundle()
    return str(bundle) if bundle else "probe"


@contextmanager
def prefect_trust() -> Iterator[None]:
    """Within the block, Prefect's clients of this process verify Prefect's HTTPS against
    ``SMS_CA_BUNDLE``, and so do the processes a Prefect worker starts (it passes the settings on).

    The bundle becomes the *default* of Prefect's ``PREFECT_API_SSL_CERT_FILE`` (Prefect's public
    settings API): a value the user set (environment or Prefect profile) still wins. Without the
    variable nothing changes and Prefect is not imported here."""
    bundle = ca_bundle()
    if bundle is None:
        yield
        return
    client_context()  # a file without a PEM CA certificate stops here, naming the variable
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, temporary_settings

    with temporary_settings(set_defaults={PREFECT_API_SSL_CERT_FILE: str(bundle)}):
        yield


def verification_failure(error: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate-verification error behind ``error`` (its causes, contexts and the
    ``errors`` some clients collect), or None when the failure was something else."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        pending.extend(e for e in getattr(current, "errors", ()) or () if isinstance(e, BaseException))
        pending.extend(e for e in getattr(current, "args", ()) if isinstance(e, BaseException))
    return None


def refusal(link: str, error: BaseException, trust: tuple[str, str] | None = None) -> CertificateRefused | None:
    """:class:`CertificateRefused` naming ``link`` (e.g. "Elasticsearch at https://logs:9200")
    when ``error`` is a refused certificate, else None. ``trust``: the setting and CA file the
    link verified with, when not ``SMS_CA_BUNDLE`` (:func:`prefect_api_trust`)."""
    failure = verification_failure(error)
    if failure is None:
        return None
    return certificate_refused(link, failure.verify_message or failure.reason or str(failure), trust)


def certificate_refused(link: str, reason: str, trust: tuple[str, str] | None = None) -> CertificateRefused:
    """The error for ``link``'s refused certificate, with what to do about it."""
    variable, trusted = trust or (CA_BUNDLE_ENV, str(ca_bundle() or ""))
    source = f"the CAs of {variable}={trusted}" if trusted else f"the system's CAs ({variable} is unset)"
    return CertificateRefused(
        f"{link}: TLS certificate refused ({reason}); it does not verify against {source}: "
        f"put the CA that signed it in {variable} (docs/tls.md)"
    )


def prefect_api_trust() -> tuple[str, str] | None:
    """``("PREFECT_API_SSL_CERT_FILE", file)`` when Prefect's own setting names another file than
    ``SMS_CA_BUNDLE`` (it wins, :func:`prefect_trust`), else None: the bundle is the trust."""
    from prefect.settings import PREFECT_API_SSL_CERT_FILE

    own = PREFECT_API_SSL_CERT_FILE.value()
    bundle = ca_bundle()
    return ("PREFECT_API_SSL_CERT_FILE", own) if own and own != (str(bundle) if bundle else None) else None


@functools.cache
def warn_clear_text(link: str, setting: str) -> None:
    """Logs once per process that ``link`` (a peer beyond loopback) is reached or served in clear
    text because ``setting`` says so: allowed, never silent."""
    log.warning("%s: TLS is off (%s): what crosses this link can be read and changed on the network "
                "(docs/tls.md)", link, setting)


def failure_name(link: str, error: BaseException) -> str:
    """A short name of a failed call on ``link`` for its caller: ``TLS certificate refused`` (the
    full reason, naming the link, is logged for the operator) or the error's type."""
    refused = refusal(link, error)
    if refused is None:
        return type(error).__name__
    log.error("%s", refused)
    return "TLS certificate refused"
