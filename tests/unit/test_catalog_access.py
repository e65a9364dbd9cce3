"""Access rules, webhooks and deliveries in the catalog (SQLite): CRUD, replay refusal, rate counts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sms_plugin.catalog import Catalog, audit, list_audit
from sms_plugin.catalog import access
from sms_plugin.catalog.models import utcnow
from sms_plugin.errors import Conflict, NotFound


@pytest.fixture
def catalog(tmp_path):
    opened = Catalog(f"sqlite:///{tmp_path}/c.db")
    opened.upgrade()
    yield opened
    opened.dispose()


def test_rule_crud(catalog):
    with catalog.session() as s:
        rule = access.add_rule(
            s, created_by="adam", subject_kind="group", subject="team-payments", actions=["start"],
            script_tag="payments", host_label="prod-eu",
        )
    with catalog.session() as s:
        access.replace_rule(s, rule.id, actions=["start", "stop"], host_label=None)
        [stored] = access.list_rules(s)
        assert (stored.actions, stored.host_label, stored.script_tag) == (["start", "stop"], None, "payments")
        access.remove_rule(s, rule.id)
        with pytest.raises(NotFound, match=f"no access rule {rule.id}"):
            access.get_rule(s, rule.id)


def test_webhook_crud_and_deliveries(catalog):
    with catalog.session() as s:
        access.add_webhook(s, id="wh1", created_by="adam", script="deploy", secret="sealed", arguments=[])
        with pytest.raises(Conflict):
            access.add_webhook(s, id="wh1", created_by="adam", script="x", secret="sealed", arguments=[])
    with catalog.session() as s:
        first = access.record_delivery(s, "wh1", delivery_id="d1", nonce="sig-1", outcome="accepted", client="1.2.3.4")
        access.record_delivery(s, "wh1", delivery_id="bad", outcome="bad-signature")
        access.record_delivery(s, "wh1", delivery_id="bad", outcome="bad-signature")  # no nonce: kept, never unique
        with pytest.raises(Conflict, match="seen before"):
            access.record_delivery(s, "wh1", delivery_id="d1-again", nonce="sig-1", outcome="accepted")
        access.update_delivery(s, first, outcome="started", run_id="run-1")  # the session is still usable
    with catalog.session() as s:
        assert access.count_accepted_deliveries(s, "wh1", since=utcnow() - timedelta(minutes=1)) == 1
        assert access.count_accepted_deliveries(s, "wh1", since=utcnow() + timedelta(seconds=1)) == 0
        outcomes = [d.outcome for d in access.list_deliveries(s, "wh1")]
        assert sorted(outcomes) == ["bad-signature", "bad-signature", "started"]
        access.remove_webhook(s, "wh1")
        assert access.list_webhooks(s) == []
        assert len(access.list_deliveries(s, "wh1")) == 3


def test_audit_events_carry_client_and_subject(catalog):
    with catalog.session() as s:
        audit(s, actor="otto", action="api.run.start", object_type="script", object_name="x",
              outcome="denied", client="10.0.0.7", subject="sub-otto", detail={"reason": "no"})
        audit(s, actor="anna", action="api.script.add", object_type="script", object_name="y")
    with catalog.session() as s:
        [event] = list_audit(s, outcome="denied")
        assert (event.actor, event.client, event.subject, event.detail) == ("otto", "10.0.0.7", "sub-otto", {"reason": "no"})
        assert [e.actor for e in list_audit(s, actor="anna")] == ["anna"]
