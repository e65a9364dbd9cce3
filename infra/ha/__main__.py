"""``python -m infra.ha up [--no-gateways] [--monitoring] [--elasticsearch] [--kafka]``: start the HA topology on loopback, print how to reach
it, and stop everything on Ctrl-C (docs/deploy.md)."""

from __future__ import annotations

import argparse
import signal
import threading
from contextlib import ExitStack

from infra.ha.topology import HATopology


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.ha", description=__doc__)
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--no-gateways", action="store_true", help="no Keycloak and no gateways (faster)")
    parser.add_argument("--monitoring", action="store_true",
                        help="also Prometheus as an identical pair, each with its own sms exporter")
    parser.add_argument("--elasticsearch", action="store_true",
                        help="a three-node Elasticsearch cluster and sms log-shipper; the workers ship output to it")
    parser.add_argument("--kafka", action="store_true", help="three Kafka brokers and sms events publishing to them")
    parser.add_argument("--pool", default="sms", help="the work pool of the workers (default sms)")
    options = parser.parse_args()
    with ExitStack() as stack:
        issuer = None
        if not options.no_gateways:
            from infra.testbed.keycloak import Keycloak

            issuer = stack.enter_context(Keycloak()).issuer
        ha = stack.enter_context(HATopology(
            issuer=issuer, pool=options.pool, elasticsearch=options.elasticsearch, kafka=options.kafka))
        if options.monitoring:
            ha.add_monitoring()
        print("SMS HA topology is up (Ctrl-C stops it). Use it with:")
        for name, value in ha.client_env().items():
            print(f"  export {name}={value}")
        if ha.gateways:
            print(f"  gateways (HTTPS through HAProxy): {ha.gateway_url}  CA: {ha.ca_path}")
        print(f"  Prefect API processes: {', '.join(api.api_url for api in ha.apis)}")
        if ha.prometheus:
            print(f"  Prometheus pair: {', '.join(p.url for p in ha.prometheus)}")
        print(f"  Galera nodes: {', '.join(str(node.port) for node in ha.galera.nodes)}")
        if ha.elasticsearch:
            print(f"  export SMS_ELASTICSEARCH_URL={ha.elasticsearch.urls}")
        if ha.kafka:
            print(f"  export SMS_KAFKA_BOOTSTRAP={ha.kafka.bootstrap}")
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        try:
            stopped.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
