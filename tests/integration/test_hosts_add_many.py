"""``hosts.add_many`` (bulk registration: ``sms host import``, ``sms apply``, the fleet test bed)
against a real Prefect server: the refusals of ``hosts.add`` host by host, the others saved as
``hosts.add`` would save them (secrets, limits), overwrite, and an import that names each bad entry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect import get_client
from pydantic import SecretStr

from sms_plugin import host_import
from sms_plugin import hosts as host_services
from sms_plugin.catalog import Catalog
from sms_plugin.errors import Conflict, InvalidInput, NotFound
from sms_plugin.host_kinds import LocalHost, SSHHost, load_host
from sms_plugin.host_kinds.registry import stored_hosts
from sms_plugin.inventory import read as read_inventory
from sms_plugin.limits import host_limit_name

pytestmark = pytest.mark.integration

SUFFIX = uuid.uuid4().hex[:6]


@pytest.fixture(scope="module", autouse=True)
def hosts_removed_after(prefect_server) -> Iterator[None]:
    """This module's hosts point at unroutable addresses: checking one takes its whole connect
    timeout, so they are removed from the session's Prefect (the exporter's tests check every host)."""
    yield

    async def remove() -> None:
        async with get_client() as client:
            for name, stored in (await stored_hosts(client)).items():
                if name.endswith(SUFFIX):
                    await client.delete_block_document(stored.document_id)

    asyncio.run(remove())


def ssh(address: str, **fields: object) -> SSHHost:
    return SSHHost(address=address, username="ops", private_key=SecretStr(f"key of {address}"), **fields)  # type: ignore[arg-type]


async def limit_of(name: str) -> int:
    async with get_client() as client:
        return (await client.read_global_concurrency_limit_by_name(host_limit_name(name))).limit


async def test_mixed_good_and_bad_hosts_each_refused_by_name(prefect_server):
    taken, local = f"bulk-taken-{SUFFIX}", f"bulk-local-{SUFFIX}"
    await host_services.add(taken, ssh("192.0.2.1"))
    await host_services.add(local, LocalHost(admins_only=False))
    good = {f"bulk-good-{n}-{SUFFIX}": ssh(f"192.0.2.{10 + n}", max_parallel_sessions=3 + n) for n in range(5)}
    refused = await host_services.add_many(
        {**good, "Bad_Name": ssh("192.0.2.2"), taken: ssh("192.0.2.3"), local: ssh("192.0.2.4")}
    )

    assert set(refused) == {"Bad_Name", taken, local}
    assert isinstance(refused["Bad_Name"], InvalidInput)
    assert isinstance(refused[taken], Conflict) and "pass overwrite" in str(refused[taken])
    message = str(host_services.refusals(refused))
    assert all(name in message for name in refused) and not any(name in message for name in good)
    assert (await load_host(taken)).address == "192.0.2.1"  # refused: left as it was
    assert (await load_host(local)).kind == "local"
    with pytest.raises(NotFound):
        await load_host("Bad_Name")
    for number, (name, block) in enumerate(good.items()):
        saved = await load_host(name)
        assert isinstance(saved, SSHHost) and saved.address == block.address
        assert saved.private_key.get_secret_value() == f"key of {block.address}"  # a secret, stored whole
        assert await limit_of(name) == 3 + number  # the `host:<name>` limit, as hosts.add makes it


async def test_overwrite_replaces_hosts_but_keeps_their_kind(prefect_server):
    name, local = f"bulk-over-{SUFFIX}", f"bulk-over-local-{SUFFIX}"
    await host_services.add(local, LocalHost(admins_only=False))
    assert await host_services.add_many({name: ssh("192.0.2.50", max_parallel_sessions=4)}) == {}
    refused = await host_services.add_many(
        {name: ssh("192.0.2.51", labels=["role=db"], max_parallel_sessions=7), local: ssh("192.0.2.52")}, overwrite=True
    )

    assert list(refused) == [local] and "keeps its kind" in str(refused[local])
    saved = await load_host(name)
    assert isinstance(saved, SSHHost) and (saved.address, saved.labels) == ("192.0.2.51", ["role=db"])
    assert await limit_of(name) == 7  # the limit follows the block
    assert {host.name for host in await host_services.listing()} >= {name, local}


async def test_an_import_with_bad_entries_names_each_and_creates_nothing(catalog: Catalog, tmp_path: Path):
    template = f"bulk-template-{SUFFIX}"
    await host_services.add(template, ssh("192.0.2.60"))
    rows = [f"  - {{name: bulk-imp-{n:03d}-{SUFFIX}, address: 192.0.2.{n}}}" for n in range(1, 13)]
    rows[1] = f"  - {{name: bulk-imp-002-{SUFFIX}, address: 'bad address!'}}"
    rows[5] = f"  - {{name: bulk-imp-006-{SUFFIX}, address: 192.0.2.6, labels: ['no spaces allowed']}}"
    rows[9] = f"  - {{name: bulk-imp-010-{SUFFIX}, address: 192.0.2.10, credentials_from: bulk-missing-{SUFFIX}}}"
    path = tmp_path / "hosts.yaml"
    path.write_text(f"defaults: {{username: ops, credentials_from: {template}}}\nhosts:\n" + "\n".join(rows) + "\n")
    with pytest.raises(InvalidInput) as refused:
        await host_import.plan(catalog, read_inventory(path))
    bad = {line.split(":")[0].strip() for line in str(refused.value).splitlines()[1:]}
    assert len(bad) == 3 and all(f"bulk-imp-{n}-{SUFFIX}" in str(refused.value) for n in ("002", "006", "010"))
    assert not any(host.name.startswith("bulk-imp-") for host in await host_services.listing())

    rows[1], rows[5], rows[9] = (f"  - {{name: bulk-imp-{n}-{SUFFIX}, address: 192.0.2.{int(n)}}}" for n in ("002", "006", "010"))
    path.write_text(path.read_text().split("hosts:\n")[0] + "hosts:\n" + "\n".join(rows) + "\n")
    planned = await host_import.plan(catalog, read_inventory(path))
    await host_import.apply(catalog, planned, author="test")
    imported = {host.name for host in await host_services.listing() if host.name.startswith("bulk-imp-")}
    assert len(imported) == 12
    assert (await load_host(f"bulk-imp-006-{SUFFIX}")).private_key.get_secret_value() == "key of 192.0.2.60"
