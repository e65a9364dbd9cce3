"""``SMS_ELASTICSEARCH_URL`` as one node or a comma-separated list of a cluster's nodes."""

from __future__ import annotations

import pytest

from sms_plugin import settings
from sms_plugin.telemetry.logs import elastic


def test_a_list_of_nodes_gives_one_client_over_all_of_them():
    client = elastic.connect("http://es-1:9200, http://es-2:9200,,http://es-3:9200")
    assert sorted(node.base_url for node in client.transport.node_pool.all()) == [
        "http://es-1:9200", "http://es-2:9200", "http://es-3:9200"]


def test_one_url_stays_one_node():
    assert [node.base_url for node in elastic.connect("http://es-1:9200").transport.node_pool.all()] == ["http://es-1:9200"]


def test_the_nodes_are_shown_without_their_passwords(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SMS_ELASTICSEARCH_URL", "https://sms:s3cret@es-1:9200,https://sms:s3cret@es-2:9201")
    assert elastic._shown(settings.current().logs.elasticsearch_url) == "https://es-1:9200,https://es-2:9201"
