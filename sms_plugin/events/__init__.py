"""Lifecycle events to Kafka (``sms events``, docs/events.md): the catalog's outbox and Prefect's run
events, published as CloudEvents 1.0 JSON."""
