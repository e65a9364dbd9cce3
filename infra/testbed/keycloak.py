"""A private Keycloak (``kc.sh start-dev``) on loopback ports with the ``sms`` realm imported.

The official distribution ``org.keycloak:keycloak-quarkus-dist`` is fetched into ~/.m2 with Maven
(once per machine) and unzipped once into ~/.cache/sms-testbed/. Keycloak writes into its install
folder (re-augmented build, H2 database, transaction logs), so every peer runs from a private
*home* in its temp folder: copies of the small folders and links to the read-only jars and themes.
Besides HTTP it serves HTTPS (``https_url``, ``https_issuer``) with a certificate of its own CA
(``ca_path``).
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
import zipfile
from pathlib import Path

import httpx

from infra.testbed.ports import free_port
from infra.testbed.process import Peer, PeerError, find_binary, run
from infra.testbed.tls import make_ca_and_server

GROUP, ARTIFACT, VERSION = "org.keycloak", "keycloak-quarkus-dist", "26.4.7"
REALM_FILE = Path(__file__).resolve().parents[1] / "keycloak" / "sms-demo-realm.json"
CACHE = Path.home() / ".cache" / "sms-testbed"
#: Large, read-only parts of the distribution that a private home links instead of copying.
_SHARED = ("lib/lib", "themes")


def _maven_zip() -> Path:
    """The distribution zip in ~/.m2, fetched with ``mvn dependency:get`` when missing."""
    path = (
        Path.home() / ".m2" / "repository" / GROUP.replace(".", "/") / ARTIFACT / VERSION
        / f"{ARTIFACT}-{VERSION}.zip"
    )
    if not path.exists():
        run(
            [
                "mvn", "-q", "dependency:get",
                f"-Dartifact={GROUP}:{ARTIFACT}:{VERSION}:zip", "-Dtransitive=false",
            ],
            timeout=900,
        )
    if not path.exists():
        raise PeerError(f"mvn did not put {path.name} into ~/.m2")
    return path


def distribution() -> Path:
    """The unzipped distribution in the cache (unzipped once; concurrent callers race safely)."""
    target = CACHE / f"keycloak-{VERSION}"
    if (target / "bin" / "kc.sh").exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="keycloak-unzip-", dir=CACHE))
    try:
        with zipfile.ZipFile(_maven_zip()) as archive:
            archive.extractall(staging)
        (staging / f"keycloak-{VERSION}" / "bin" / "kc.sh").chmod(0o755)
        try:
            (staging / f"keycloak-{VERSION}").rename(target)
        except OSError:
            if not (target / "bin" / "kc.sh").exists():  # lost the race to a complete copy: fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def private_home(dist: Path, home: Path) -> Path:
    """A Keycloak home under ``home`` that shares the distribution's jars and themes."""
    home.mkdir(parents=True)
    for entry in dist.rglob("*"):
        relative = entry.relative_to(dist)
        if any(str(relative) == s or str(relative).startswith(s + "/") for s in _SHARED):
            continue
        if entry.is_dir():
            (home / relative).mkdir(parents=True, exist_ok=True)
        else:
            shutil.copy2(entry, home / relative)
    for shared in _SHARED:
        (home / shared).symlink_to(dist / shared)
    return home


class Keycloak(Peer):
    """Keycloak in dev mode with demo realm ``sms`` (infra/keycloak/sms-demo-realm.json) imported.

    Example::

        with Keycloak() as kc:
            httpx.get(kc.issuer + "/.well-known/openid-configuration")
    """

    name = "keycloak"
    realm = "sms"
    admin_user = "admin"

    def __init__(self, *, timeout: float = 480.0, java_home: str | None = None) -> None:
        """``timeout``: ~60 s is typical on an idle 2-core machine; a loaded one needs minutes."""
        super().__init__(timeout=timeout, grace=20.0)
        self.java_home = java_home or os.environ.get("SMS_TESTBED_JAVA_HOME")
        self.port = 0
        self.https_port = 0
        self.ca_path: Path | None = None
        self.management_port = 0
        self.admin_password = ""

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def issuer(self) -> str:
        """The realm's issuer URL (also the base of its OIDC endpoints)."""
        return f"{self.url}/realms/{self.realm}"

    @property
    def https_issuer(self) -> str:
        """The realm's issuer over HTTPS (tokens fetched there name it; ``ca_path`` verifies it)."""
        return f"https://{self.host}:{self.https_port}/realms/{self.realm}"

    def token(self, username: str, password: str | None = None, client_id: str = "sms-gateway",
              client_secret: str | None = "sms-gateway-secret", *, https: bool = False) -> str:
        """An access token for a realm user by the password grant (test helper); ``https``: from
        the HTTPS issuer."""
        data = {
            "grant_type": "password", "client_id": client_id, "username": username,
            "password": password if password is not None else f"{username}-pw",
        }
        if client_secret:
            data["client_secret"] = client_secret
        verify = ssl.create_default_context(cafile=str(self.ca_path)) if https else True
        issuer = self.https_issuer if https else self.issuer
        reply = httpx.post(f"{issuer}/protocol/openid-connect/token", data=data, timeout=30, verify=verify)
        reply.raise_for_status()
        return str(reply.json()["access_token"])

    def admin(self) -> httpx.Client:
        """An HTTP client on the admin REST API of realm ``sms`` (bootstrap admin's token)."""
        reply = httpx.post(
            f"{self.url}/realms/master/protocol/openid-connect/token",
            data={"grant_type": "password", "client_id": "admin-cli",
                  "username": self.admin_user, "password": self.admin_password},
            timeout=30,
        )
        reply.raise_for_status()
        return httpx.Client(
            base_url=f"{self.url}/admin/realms/{self.realm}",
            headers={"Authorization": f"Bearer {reply.json()['access_token']}"},
            timeout=30,
        )

    def add_user(self, name: str, roles: tuple[str, ...]) -> str:
        """A fresh user of the realm with these realm roles, password ``name`` + "-pw" (test helper); its id."""
        with self.admin() as admin:
            created = admin.post("/users", json={
                "username": name, "enabled": True, "email": f"{name}@sms.test", "emailVerified": True,
                "firstName": name.title(), "lastName": "Test",
                "credentials": [{"type": "password", "value": f"{name}-pw", "temporary": False}],
            }).raise_for_status()
            user_id = created.headers["location"].rsplit("/", 1)[1]
            granted = [admin.get(f"/roles/{role}").raise_for_status().json() for role in roles]
            admin.post(f"/users/{user_id}/role-mappings/realm", json=granted).raise_for_status()
        return str(user_id)

    def allow_redirect(self, uri: str, client_id: str = "sms-gateway") -> None:
        """Add ``uri`` to the valid redirect URIs of ``client_id``: the realm file lists loopback
        without a port, which Keycloak matches on any port for ``http`` only (RFC 8252's loopback
        rule), so an HTTPS gateway on a port of its own (behind HAProxy) is listed by its URL."""
        with self.admin() as admin:
            [client] = admin.get("/clients", params={"clientId": client_id}).raise_for_status().json()
            if uri not in client["redirectUris"]:
                client["redirectUris"].append(uri)
                admin.put(f"/clients/{client['id']}", json=client).raise_for_status()

    def add_signing_key(self, private_key_pem: str) -> str:
        """Add an RS256 key to the realm's keys (lowest priority, so Keycloak keeps signing with
        its own) and return its ``kid``: tokens signed with it pass the realm's JWKS."""
        with self.admin() as admin:
            realm_id = admin.get("").raise_for_status().json()["id"]
            created = admin.post("/components", json={
                "name": f"test-key-{os.urandom(4).hex()}", "providerId": "rsa",
                "providerType": "org.keycloak.keys.KeyProvider", "parentId": realm_id,
                "config": {"privateKey": [private_key_pem], "priority": ["-100"], "enabled": ["true"],
                           "active": ["true"], "algorithm": ["RS256"]},
            }).raise_for_status()
            component_id = created.headers["location"].rsplit("/", 1)[1]
            keys = admin.get("/keys").raise_for_status().json()["keys"]
        return next(str(k["kid"]) for k in keys if k.get("providerId") == component_id)

    def _start(self) -> None:
        assert self.tmp is not None
        home = private_home(distribution(), self.tmp / "home")
        import_dir = home / "data" / "import"
        import_dir.mkdir(parents=True)
        shutil.copy2(REALM_FILE, import_dir / f"{self.realm}-realm.json")  # the name Keycloak's import demands
        self.port = free_port()
        self.https_port = free_port()
        self.management_port = free_port()
        (self.tmp / "tls").mkdir()
        self.ca_path, certificate, key = make_ca_and_server(self.tmp / "tls", self.host, "Keycloak test")
        self.admin_password = os.urandom(12).hex()
        env = dict(os.environ)
        env.update(
            KC_BOOTSTRAP_ADMIN_USERNAME=self.admin_user,
            KC_BOOTSTRAP_ADMIN_PASSWORD=self.admin_password,
            # Small heap: the machine is shared with other peers. C1 only: a faster start and
            # less CPU on a small machine (a test realm needs no peak throughput).
            JAVA_OPTS_KC_HEAP="-XX:MaxRAMPercentage=25 -XX:InitialRAMPercentage=5",
            JAVA_OPTS_APPEND="-XX:TieredStopAtLevel=1",
        )
        if self.java_home:
            env["JAVA_HOME"] = self.java_home
        elif "JAVA_HOME" not in env:
            find_binary("java")
        argv = [
            str(home / "bin" / "kc.sh"), "start-dev",
            f"--http-host={self.host}", f"--http-port={self.port}",
            # The management interface (health) would inherit the HTTPS settings: keep it plain, as probed.
            f"--http-management-port={self.management_port}", "--http-management-scheme=http",
            f"--https-port={self.https_port}", f"--https-certificate-file={certificate}",
            f"--https-certificate-key-file={key}",
            "--health-enabled=true", "--import-realm",
            "--cache=local", "--log-level=WARN,org.keycloak.exportimport:INFO",
        ]
        self.spawn(argv, self._ready, env=env)

    def _ready(self) -> bool:
        health = httpx.get(f"http://{self.host}:{self.management_port}/health/ready", timeout=5)
        if health.status_code != 200:
            return False
        return httpx.get(f"{self.issuer}/protocol/openid-connect/certs", timeout=5).status_code == 200
