"""Telemetry: SMS listens to Prefect (events, log records) and publishes what it hears.

``metrics`` and ``sources`` turn run facts into Prometheus metrics; ``exporter`` is the
``sms exporter`` service. The core never calls into this package.
"""
