"""Where the exporter's Kafka replay starts in each partition (``start_offsets``): the first record
in the window, the partition's end as it was before the lookup when none is, and a partition whose
new leader cannot answer yet asked again, never skipped. The consumer here is a scripted stand-in
for the broker's answers; tests/integration/test_events_kafka.py replays a real cluster."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from sms_plugin.telemetry.kafka_source import start_offsets

SINCE = 1_764_576_000_000
NOT_YET = KafkaError(KafkaError.OFFSET_NOT_AVAILABLE)


@dataclass
class Answer:
    """A partition as ``offsets_for_times`` returns it (a real TopicPartition's error is read-only)."""
    topic: str
    partition: int
    offset: int
    error: KafkaError | None = None


class ScriptedBroker:
    """Answers ``offsets_for_times`` from a list of rounds ({partition: offset or error}); each
    partition's end (high watermark) is fixed."""

    def __init__(self, rounds: list[dict[int, int | KafkaError]], ends: dict[int, int]) -> None:
        self.rounds, self.ends, self.asked = rounds, ends, []

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float, cached: bool) -> tuple[int, int]:
        assert not cached, "a cached end may be older than the lookup"
        return 0, self.ends[partition.partition]

    def offsets_for_times(self, wanted: list[TopicPartition], timeout: float) -> list[Answer]:
        assert all(p.offset == SINCE for p in wanted)
        self.asked.append(sorted(p.partition for p in wanted))
        answers = self.rounds.pop(0)
        return [Answer(p.topic, p.partition, -1001, answer) if isinstance(answer, KafkaError)
                else Answer(p.topic, p.partition, answer) for p in wanted for answer in [answers[p.partition]]]


def partitions(*numbers: int) -> list[TopicPartition]:
    return [TopicPartition("sms.runs", n) for n in numbers]


def offsets(found: list[TopicPartition]) -> dict[int, int]:
    return {p.partition: p.offset for p in found}


def test_each_partition_starts_at_its_first_record_in_the_window_or_its_end_before_the_lookup() -> None:
    broker = ScriptedBroker([{0: 17, 1: -1, 2: 0}], ends={0: 40, 1: 9, 2: 3})
    assert offsets(start_offsets(broker, partitions(0, 1, 2), SINCE)) == {0: 17, 1: 9, 2: 0}
    assert broker.asked == [[0, 1, 2]]


def test_a_partition_whose_leader_cannot_answer_yet_is_asked_again_not_skipped(monkeypatch) -> None:
    monkeypatch.setattr("sms_plugin.telemetry.kafka_source._LOOKUP_PAUSE", 0)
    broker = ScriptedBroker([{0: 5, 1: NOT_YET, 2: 8}, {1: NOT_YET}, {1: 2}], ends={0: 9, 1: 9, 2: 9})
    assert offsets(start_offsets(broker, partitions(0, 1, 2), SINCE)) == {0: 5, 1: 2, 2: 8}
    assert broker.asked == [[0, 1, 2], [1], [1]]


def test_a_partition_never_answered_raises_so_the_exporter_starts_over(monkeypatch) -> None:
    monkeypatch.setattr("sms_plugin.telemetry.kafka_source._LOOKUP_PAUSE", 0)
    broker = ScriptedBroker([{0: 5, 1: NOT_YET}] + [{1: NOT_YET}] * 2, ends={0: 9, 1: 9})
    with pytest.raises(KafkaException) as raised:
        start_offsets(broker, partitions(0, 1), SINCE, tries=3)
    assert raised.value.args[0].code() == KafkaError.OFFSET_NOT_AVAILABLE
    assert broker.asked == [[0, 1], [1], [1]]
