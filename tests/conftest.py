"""Session fixtures: the real peers of the test bed (``infra/testbed``), started on loopback.

A peer that cannot be started fails the tests that need it (never a skip). ``own_catalog``, a
test's own SQLite catalog, is here too: unit and integration tests both use it. Other fixtures
belong in ``tests/unit/conftest.py`` and ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

# Before anything imports prefect: private homes, so tests never touch ~/.prefect or ~/.sms,
# and no API URL from the caller's shell (tests get theirs from the `prefect_server` fixture).
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="sms-pytest-"))
atexit.register(shutil.rmtree, _SESSION_TMP, ignore_errors=True)
os.environ.setdefault("PREFECT_HOME", str(_SESSION_TMP / "prefect-home"))
os.environ.setdefault("SMS_HOME", str(_SESSION_TMP / "sms-home"))
os.environ.pop("PREFECT_API_URL", None)
# The test bed lives in infra/ at the repository root (pyproject's pythonpath may say so too).
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from infra.testbed.elasticsearch import Elasticsearch  # noqa: E402
from infra.testbed.gateway import GatewayBed  # noqa: E402
from infra.testbed.kafka import KafkaCluster  # noqa: E402
from infra.testbed.keycloak import Keycloak  # noqa: E402
from infra.testbed.mariadb import MariaDB  # noqa: E402
from infra.testbed.postgresql import PostgreSQL  # noqa: E402
from infra.testbed.prefect_server import PrefectServer  # noqa: E402
from infra.testbed.prefect_worker import PrefectWorker  # noqa: E402
from infra.testbed.process import Peer, PeerError  # noqa: E402
from infra.testbed.prometheus import Prometheus  # noqa: E402
from infra.testbed.sshd import SshServer  # noqa: E402
from infra.testbed.winrm_host import WinRMHost  # noqa: E402
from sms_plugin.catalog import Catalog  # noqa: E402

P = TypeVar("P", bound=Peer)

_RUN_ID = uuid.uuid4().hex


def run_suffix(length: int = 6) -> str:
    """A hex suffix for the names a module makes at import, new in each pytest run and the same in
    every process of one run: ``-n 2`` collects in each process and needs the same test ids."""
    return os.environ.get("PYTEST_XDIST_TESTRUNUID", _RUN_ID)[:length]


def _started(peer: P) -> P:
    """Start ``peer`` or fail the requesting test with the reason and the peer's log tail."""
    try:
        return peer.start()
    except PeerError as exc:
        _not_started(peer.name, exc)


def _not_started(name: str, exc: PeerError) -> NoReturn:
    details = f"\n--- {name} log tail ---\n{exc.log_tail}" if exc.log_tail else ""
    pytest.fail(f"{name} could not be started: {exc.reason}. Run `make test`, which installs it.{details}",
                pytrace=False)


@pytest.fixture
def own_catalog(tmp_path: Path) -> Iterator[Catalog]:
    """A migrated SQLite catalog of the test's own (not the one the session's worker shares)."""
    opened = Catalog(f"sqlite:///{tmp_path}/catalog.db")
    opened.upgrade()
    yield opened
    opened.dispose()


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    """A private MariaDB; ``.url`` is the SQLAlchemy URL of the empty database ``sms_test``."""
    peer = _started(MariaDB())
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def postgresql() -> Iterator[PostgreSQL]:
    """A private PostgreSQL; ``.prefect_url`` is a database URL for a Prefect server."""
    peer = _started(PostgreSQL())
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def ssh_server() -> Iterator[SshServer]:
    """A private sshd for user ``smstest`` (key and password login, pinned host keys)."""
    peer = _started(SshServer())
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def cut_off_sshd() -> Iterator[SshServer]:
    """A private sshd in a network namespace of its own: ``.network.cut()`` cuts it off the
    network (its packets dropped silently), ``.network.restore()`` brings it back."""
    peer = _started(SshServer(own_network=True))
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def winrm_host() -> Iterator[WinRMHost]:
    """The loopback WinRM test host (WinRS over HTTP+NTLM and HTTPS, commands run by Wine's cmd.exe)."""
    peer = _started(WinRMHost())
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def legacy_ssh_server() -> Iterator[SshServer]:
    """A second private sshd offering only legacy algorithms (SHA-1 kex, ssh-rsa, CBC, hmac-sha1);
    RSA host key, RSA client key for ``smstest``; no SFTP subsystem (as on hardened old servers)."""
    peer = _started(SshServer(legacy=True))
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[PrefectServer]:
    """A private Prefect server; this test process talks to it for the whole session."""
    peer = _started(PrefectServer())
    with talking_to(peer):
        yield peer


@contextmanager
def talking_to(peer: PrefectServer, auth_string: str | None = None) -> Iterator[PrefectServer]:
    """This test process uses ``peer``'s API (with Prefect's ``auth_string``, if given) while the
    block runs; the peer is stopped at the end."""
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = peer.api_url
    try:
        with ExitStack() as stack:
            import prefect.context
            from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

            updates = {PREFECT_API_URL: peer.api_url, **({PREFECT_API_AUTH_STRING: auth_string} if auth_string else {})}
            stack.enter_context(temporary_settings(updates=updates))
            # Prefect read its settings at import; also replace its process-global settings so
            # that threads and contexts copied earlier (e.g. the session event loop) see them,
            # as prefect.testing.utilities.prefect_test_harness does.
            stack.enter_context(
                prefect.context._temporary_global_settings_context(
                    prefect.context.get_settings_context()
                )
            )
            yield peer
            _drain_prefect_clients()
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        peer.stop()


def _drain_prefect_clients() -> None:
    """Send buffered logs and events to the server before it stops."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        try:
            service.drain_all(timeout=5)
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass


@pytest.fixture(scope="session")
def prefect_worker(prefect_server: PrefectServer) -> Iterator[PrefectWorker]:
    """An ``sms`` worker (SMS's default: runs in its own process) on pool ``sms`` with this process's
    SMS_HOME and SMS_DATABASE_URL. A test that needs a process per run starts an ``sms-process`` worker."""
    extra_env = {k: os.environ[k] for k in ("SMS_HOME", "SMS_DATABASE_URL") if k in os.environ}
    peer = _started(PrefectWorker(prefect_server.api_url, worker_type="sms", extra_env=extra_env))
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def prometheus() -> Iterator[Prometheus]:
    """A private Prometheus scraping every second, SMS's alert rules loaded; ``.scrape(job, targets)``."""
    rules = Path(_ROOT) / "infra" / "prometheus" / "rules" / "sms.rules.yml"
    peer = _started(Prometheus(rule_files=[rules]))
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def keycloak() -> Iterator[Keycloak]:
    """A private Keycloak with realm ``sms`` (the demo realm, infra/keycloak/sms-demo-realm.json); ``.issuer`` is the
    realm's issuer URL, ``.token(user)`` a password-grant access token (password: user + "-pw")."""
    peer = _started(Keycloak())
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def elasticsearch() -> Iterator[Elasticsearch]:
    """A private single-node Elasticsearch (~15-30 s to start); ``.url``, ``.halt()``/``.resume()``."""
    peer = _started(Elasticsearch())
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaCluster]:
    """Three private Kafka brokers in KRaft mode, replication factor 3 (``min.insync.replicas=2``:
    one broker may stop); ``.bootstrap``, ``.nodes[i].halt()``/``.resume()``, ``.halt()``/``.resume()``."""
    cluster = KafkaCluster(3)
    try:
        cluster.start()
    except PeerError as exc:
        _not_started("kafka", exc)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def gateway_bed(keycloak: Keycloak) -> Iterator[GatewayBed]:
    """``sms gateway`` (``.url``) trusting the ``keycloak`` realm, in front of its own Prefect
    server (``.prefect``, serving under /prefect with an auth string only the gateway knows)."""
    peer = _started(GatewayBed(keycloak.issuer))
    yield peer
    peer.stop()
