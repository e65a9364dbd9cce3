"""Produce throughput of confluent-kafka and aiokafka against the test bed's broker(s): idempotent
producer, acks=all, 500-byte CloudEvent-sized values, keyed by one of 50 script names.

    .venv/bin/pip install aiokafka           # the contender; not a dependency of SMS
    .venv/bin/python -m bench.kafka_clients [--messages 20000] [--brokers 1|3]

Prints messages/s and the process CPU seconds for each client (docs/decisions.md has the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from infra.testbed.kafka import KafkaCluster

VALUE = b"x" * 500
KEYS = [f"script-{n}".encode() for n in range(50)]


def confluent(bootstrap: str, topic: str, count: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    failed: list[object] = []
    for index in range(count):
        while True:
            try:
                producer.produce(topic, VALUE, KEYS[index % len(KEYS)],
                                 on_delivery=lambda error, _m: error and failed.append(error))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    assert not failed, failed[:3]


async def aiokafka(bootstrap: str, topic: str, count: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    try:
        pending = [await producer.send(topic, VALUE, key=KEYS[index % len(KEYS)]) for index in range(count)]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def measure(name: str, work: object, count: int) -> None:
    began, cpu = time.perf_counter(), time.process_time()
    work()  # type: ignore[operator]
    wall, used = time.perf_counter() - began, time.process_time() - cpu
    print(f"{name:16} {count / wall:9.0f} msg/s   {wall:6.2f} s wall   {used:6.2f} s CPU")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--brokers", type=int, default=1, choices=(1, 3))
    args = parser.parse_args()
    with KafkaCluster(args.brokers) as cluster:
        print(f"{args.brokers} broker(s), {args.messages} messages of {len(VALUE)} bytes, acks=all, idempotent")
        for round_ in (1, 2):
            measure(f"confluent-kafka#{round_}", lambda: confluent(cluster.bootstrap, f"c{round_}", args.messages),
                    args.messages)
            measure(f"aiokafka#{round_}", lambda: asyncio.run(aiokafka(cluster.bootstrap, f"a{round_}", args.messages)),
                    args.messages)


if __name__ == "__main__":
    main()
