"""``sms exporter``: the Prometheus metrics exporter (docs/metrics.md)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer


def exporter(
    port: Annotated[int | None, typer.Option("--port", help="Port of /metrics (env SMS_EXPORTER_PORT; default 9478).")] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Address to listen on (env SMS_EXPORTER_ADDRESS; default 127.0.0.1).")
    ] = None,
    probe_seconds: Annotated[
        float | None, typer.Option("--probe-seconds", help="Host check period (env SMS_EXPORTER_PROBE_SECONDS; default 60).")
    ] = None,
    login_check: Annotated[
        bool, typer.Option("--login-check", help="Log in at each host check (env SMS_EXPORTER_LOGIN_CHECK=1; default: never).")
    ] = False,
    tls_cert: Annotated[str | None, typer.Option("--tls-cert", help="PEM certificate: serve HTTPS (env SMS_EXPORTER_TLS_CERT).")] = None,
    tls_key: Annotated[str | None, typer.Option("--tls-key", help="PEM private key of --tls-cert (env SMS_EXPORTER_TLS_KEY).")] = None,
    insecure_http: Annotated[
        bool, typer.Option("--insecure-http", help="Serve plain HTTP beyond loopback (env SMS_EXPORTER_ALLOW_PLAIN_HTTP=1).")
    ] = False,
) -> None:
    """Serve SMS's Prometheus metrics, kept current from Prefect's event stream. Ctrl-C stops."""
    from sms_plugin.settings import ExporterSettings, current
    from sms_plugin.telemetry.exporter import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    given = {"address": address, "port": port, "probe_seconds": probe_seconds,
             "login_check": login_check or None, "tls_cert": tls_cert, "tls_key": tls_key, "allow_plain_http": insecure_http or None}
    settings = ExporterSettings(**current().exporter.model_dump() | {k: v for k, v in given.items() if v is not None})
    try:
        serve(settings, current().events.kafka_bootstrap)
    except KeyboardInterrupt:
        pass
