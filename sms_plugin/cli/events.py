"""``sms events``: the Kafka publisher (docs/events.md)."""

from __future__ import annotations

import asyncio
import logging
import signal


def events() -> None:
    """Publish catalog and run events to Kafka (topics sms.catalog and sms.runs) until stopped.

    Needs SMS_KAFKA_BOOTSTRAP; resumes from the position recorded in the catalog. `sms up` starts
    it when SMS_KAFKA_BOOTSTRAP is set.
    """
    from sms_plugin.catalog import Catalog
    from sms_plugin.events.publisher import Publisher, PublisherSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from sms_plugin import settings as tree

    settings = PublisherSettings.of(tree.current().events)
    catalog = Catalog()
    catalog.upgrade()
    publisher = Publisher(catalog, settings)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, publisher.stop)
        await publisher.run()

    try:
        asyncio.run(main())
    finally:
        catalog.dispose()
