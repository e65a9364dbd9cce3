"""The loopback WinRM test host: a WS-Management endpoint (``/wsman``) with WinRS shells.

Run as ``python -m infra.testbed.winrm_host --port P --root DIR --users FILE [--tls CERT KEY]``
(the :class:`WinRMHost` peer does that). Over HTTP it takes NTLM only and requires message
encryption; over HTTPS it takes NTLM and Basic. Commands run for real through Wine's cmd.exe
(:mod:`infra.testbed.wine`); the PowerShell commands of the SMS transport are answered by
:mod:`infra.testbed.powershell_stub`.

What it proves and what it does not: see docs/windows.md ("The test host").
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import ssl
import sys
import threading
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import spnego.exceptions

from infra.testbed import powershell_stub, wine
from infra.testbed.ports import free_port
from infra.testbed.process import Peer
from infra.testbed.psrp_service import PsrpService
from infra.testbed.tls import make_ca_and_server
from infra.testbed.winrs_service import WinRSFault, WinRSService
from infra.testbed.wsman_security import NtlmAcceptor, Users, unwrap, wrap

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "pwsh": "http://schemas.microsoft.com/powershell",
}
for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)
SHELL = NS["rsp"]
DONE = f"{SHELL}/CommandState/Done"
RUNNING = f"{SHELL}/CommandState/Running"
POWERSHELL = "http://schemas.microsoft.com/powershell/"
_DURATION = re.compile(r"PT([\d.]+)S")


def _seconds(text: str | None, default: float) -> float:
    match = _DURATION.fullmatch(text or "")
    return float(match.group(1)) if match else default


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    prefix, name = tag.split(":")
    element = ET.SubElement(parent, f"{{{NS[prefix]}}}{name}", attrs)
    element.text = text
    return element


def _created(out: ET.Element, shell_id: str, resource_uri: str) -> None:
    """The body of a Create response: the new shell's reference and id."""
    created = _el(out, "x:ResourceCreated")
    _el(created, "wsa:Address", "http://127.0.0.1/wsman")
    reference = _el(created, "wsa:ReferenceParameters")
    _el(reference, "w:ResourceURI", resource_uri)
    _el(_el(reference, "w:SelectorSet"), "w:Selector", shell_id, Name="ShellId")
    answer = _el(out, "rsp:Shell")
    _el(answer, "rsp:ShellId", shell_id)
    _el(answer, "rsp:ResourceUri", resource_uri)


def _signalled(signal: Callable[[str, str, str], None], shell_id: str, body: ET.Element, out: ET.Element) -> None:
    """Hands a Signal request (command id and code) to ``signal`` and answers it."""
    request = body.find("rsp:Signal", NS)
    assert request is not None
    signal(shell_id, request.attrib["CommandId"], request.findtext("rsp:Code", "", NS))
    _el(out, "rsp:SignalResponse")


class WsmanApp:
    """Turns a SOAP request into a SOAP response (or fault) using the WinRS service."""

    def __init__(self, service: WinRSService, psrp: PsrpService) -> None:
        self.service = service
        self.psrp = psrp

    def handle(self, request: bytes) -> tuple[int, bytes]:
        envelope = ET.fromstring(request)
        header = envelope.find("s:Header", NS)
        body = envelope.find("s:Body", NS)
        assert header is not None and body is not None
        action = header.findtext("wsa:Action", "", NS)
        message_id = header.findtext("wsa:MessageID", "", NS)
        timeout = _seconds(header.findtext("w:OperationTimeout", None, NS), 60.0)
        shell_id = header.findtext("w:SelectorSet/w:Selector[@Name='ShellId']", "", NS)
        resource = header.findtext("w:ResourceURI", "", NS)
        response = ET.Element(f"{{{NS['s']}}}Envelope")
        head = _el(response, "s:Header")
        _el(head, "wsa:To", "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous")
        _el(head, "wsa:MessageID", f"uuid:{uuid.uuid4()}")
        _el(head, "wsa:RelatesTo", message_id)
        out = _el(response, "s:Body")
        try:
            name = action.rsplit("/", 1)[-1]
            _el(head, "wsa:Action", f"{action}Response")
            kind = "psrp_" if resource.startswith(POWERSHELL) else ""
            getattr(self, f"_{kind}{name.lower()}")(shell_id, body, out, timeout)
        except WinRSFault as fault:
            return 500, self._fault(message_id, fault)
        except (AttributeError, KeyError, ValueError) as error:
            return 500, self._fault(message_id, WinRSFault(2150858817, f"unsupported request {action}: {error}"))
        return 200, ET.tostring(response, encoding="utf-8")

    @staticmethod
    def _fault(message_id: str, fault: WinRSFault) -> bytes:
        response = ET.Element(f"{{{NS['s']}}}Envelope")
        head = _el(response, "s:Header")
        _el(head, "wsa:Action", "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault")
        _el(head, "wsa:RelatesTo", message_id)
        body = _el(response, "s:Body")
        fault_el = _el(body, "s:Fault")
        code = _el(fault_el, "s:Code")
        _el(code, "s:Value", "s:Receiver")
        subcode = _el(code, "s:Subcode")
        _el(subcode, "s:Value", "w:TimedOut" if fault.code == 2150858793 else "w:InternalError")
        _el(_el(fault_el, "s:Reason"), "s:Text", fault.message)
        detail = _el(fault_el, "s:Detail")
        wsman_fault = _el(detail, "f:WSManFault", Code=str(fault.code), Machine="127.0.0.1")
        _el(wsman_fault, "f:Message", fault.message)
        return ET.tostring(response, encoding="utf-8")

    def _create(self, shell_id: str, body: ET.Element, out: ET.Element, timeout: float) -> None:
        shell = body.find("rsp:Shell", NS)
        assert shell is not None
        env = {v.attrib["Name"]: v.text or "" for v in shell.findall("rsp:Environment/rsp:Variable", NS)}
        idle = _seconds(shell.findtext("rsp:IdleTimeOut", None, NS), 0) or None
        _created(out, self.service.create(env, idle), f"{SHELL}/cmd")

    def _delete(self, shell_id: str, body: ET.Element, out: ET.Element, timeout: float) -> None:
        self.service.delete(shell_id)

    def _command(self, shell_id: str, body: ET.Element, out: ET.Element, timeout: float) -> None:
        line = body.find("rsp:CommandLine", NS)
        assert line is not None
        parts = [line.findtext("rsp:Command", "", NS)] + [a.text or "" for a in line.findall("rsp:Arguments", NS)]
        command_id = self.service.command(shell_id, " ".join(parts))
        _el(_el(out, "rsp:CommandResponse"), "rsp:CommandId", command_id)

    def _receive(self, shell_id: str, body: ET.Element, out: ET.Element, timeout: float) -> None:
        command_id = body.find("rsp:Receive/rsp:DesiredStream", NS).attrib["CommandId"]  # type: ignore[union-attr]
        stdout, stderr, code = self.service.receive(shell_id, command_id, timeout)
        answer = _el(out, "rsp:ReceiveResponse")
        for name, data in (("stdout", stdout), ("stderr", stderr)):
            if data:
                _el(answer, "rsp:Stream", base64.b64encode(data).decode(), Name=name, CommandId=command_id)
        state = _el(answer, "rsp:CommandState", CommandId=command_id, State=DONE if code is not None else RUNNING)
        if code is not None:
            _el(state, "rsp:ExitCode", str(code))

    def _send(self, shell_id: str, body: ET.Element, out: ET.Element, timeout: float) -> None:
        stream = body.find("rsp:Send/rsp:Stream", NS)
        assert stream is not None
        data = base64.b64decode(stream.text or "")
        self.service.send(shell_id, stream.attrib["CommandId"], data, stream.attrib.get("End", "").lower() == "true")
        _el(out, "rsp:SendResponse")

    def _signal(self, shell_id: str, body: ET.Element, out: ET.Element, timeout: float) -> None:
        _signalled(self.service.signal, shell_id, body, out)

    # PSRP: the PowerShell resource URI, runspace pools and pipelines (infra/testbed/psrp_service.py)

    def _psrp_create(self, shell_id: str, body: ET.Element, out: ET.Element, timeout: float) -> None:
        shell = body.find("rsp:Shell", NS)
        assert shell is not None
        idle = _seconds(shell.findtext("rsp:IdleTimeOut", None, NS), 0) or None
        new_id = self.psrp.create(shell.attrib.get("ShellId"), shell.findtext("pwsh:creationXml", "", NS), idle)
        _created(out, new_id, f"{POWERSHELL}Microsoft.PowerShell")

    def _psrp_delete(self, shell_id: str, body: ET.Element, out: ET.Element, timeout: float) -> None:
        self.psrp.delete(shell_id)

    def _psrp_command(self, shell_id: str, body: ET.Element, out: ET.Element, timeout: float) -> None:
        line = body.find("rsp:CommandLine", NS)
        assert line is not None
        command_id = self.psrp.command(shell_id, line.attrib["CommandId"], line.findtext("rsp:Arguments", "", NS))
        _el(_el(out, "rsp:CommandResponse"), "rsp:CommandId", command_id)

    def _psrp_receive(self, shell_id: str, body: ET.Element, out: ET.Element, timeout: float) -> None:
        command_id = body.find("rsp:Receive/rsp:DesiredStream", NS).attrib.get("CommandId")  # type: ignore[union-attr]
        data = self.psrp.receive(shell_id, command_id, timeout)
        answer = _el(out, "rsp:ReceiveResponse")
        attrs = {"Name": "stdout", **({"CommandId": command_id} if command_id else {})}
        _el(answer, "rsp:Stream", base64.b64encode(data).decode(), **attrs)

    def _psrp_send(self, shell_id: str, body: ET.Element, out: ET.Element, timeout: float) -> None:
        stream = body.find("rsp:Send/rsp:Stream", NS)
        assert stream is not None
        self.psrp.send(shell_id, stream.attrib.get("CommandId"), base64.b64decode(stream.text or ""))
        _el(out, "rsp:SendResponse")

    def _psrp_signal(self, shell_id: str, body: ET.Element, out: ET.Element, timeout: float) -> None:
        _signalled(self.psrp.signal, shell_id, body, out)


class Handler(BaseHTTPRequestHandler):
    """One TCP connection; NTLM state lives here, as NTLM authenticates connections."""

    protocol_version = "HTTP/1.1"
    server: "WinRMServer"

    def setup(self) -> None:
        super().setup()
        self.acceptor: NtlmAcceptor | None = None
        self.user: str | None = None

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        sys.stderr.write(f"winrm-host {self.address_string()} {format % args}\n")

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _challenge(self, token: bytes | None = None) -> None:
        # NTLM only: pyspnego's SPNEGO acceptor and initiator disagree on the mechListMIC.
        offers = [f"NTLM {base64.b64encode(token).decode()}" if token else "NTLM"]
        if token is None:
            if self.server.tls:
                offers.append('Basic realm="WSMAN"')
        self._reply(401, headers={"WWW-Authenticate": ", ".join(offers)})

    def _authenticate(self) -> bool:
        """True once the connection is authenticated; otherwise a 401 was sent."""
        if self.user is not None and self.acceptor is not None:
            return True
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "basic" and self.server.tls:
            self.user = self.server.users.basic(value.strip())
            if self.user is None:
                self._challenge()
            return self.user is not None
        if scheme.lower() in ("negotiate", "ntlm") and value:
            if self.acceptor is None or self.acceptor.complete:
                self.acceptor = NtlmAcceptor()
            try:
                token = self.acceptor.step(base64.b64decode(value))
            except Exception as error:  # noqa: BLE001 - any bad token is a failed login
                self.log_message("authentication failed: %s", error)
                self.acceptor = None
                self._challenge()
                return False
            if not self.acceptor.complete:
                self._challenge(token)
                return False
            self.user = "ntlm"
            return True
        self._challenge()
        return False

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        """``/testbed/shells``: how many WinRS shells and runspace pools are open (for tests; no
        such page exists on Windows)."""
        if self.path != "/testbed/shells":
            self._reply(404)
            return
        app = self.server.app
        counts = {"winrs": app.service.count, "psrp": app.psrp.count}
        self._reply(200, json.dumps(counts).encode(), {"Content-Type": "application/json"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != "/wsman":
            self._reply(404)
            return
        basic = (self.headers.get("Authorization") or "").lower().startswith("basic")
        if not self._authenticate():
            return
        if basic:
            self.user = None  # Basic authenticates each request, not the connection
        if not body:
            self._reply(200)
            return
        content_type = self.headers.get("Content-Type", "")
        encrypted = content_type.startswith("multipart/encrypted")
        if encrypted:
            assert self.acceptor is not None
            try:
                body = unwrap(self.acceptor.context, body, content_type)
            except (ValueError, spnego.exceptions.SpnegoError) as error:
                self.log_message("cannot decrypt: %s", error)
                self._reply(400)
                return
        elif not self.server.tls:
            self._reply(401)  # AllowUnencrypted=false: plain SOAP over HTTP is refused
            return
        status, answer = self.server.app.handle(body)
        if encrypted:
            assert self.acceptor is not None
            answer_type, answer = wrap(self.acceptor.context, answer)
        else:
            answer_type = "application/soap+xml;charset=UTF-8"
        self._reply(status, answer, {"Content-Type": answer_type})


class WinRMServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, app: WsmanApp, users: Users, tls: tuple[str, str] | None) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.app = app
        self.users = users
        self.tls = tls is not None
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            self.socket = context.wrap_socket(self.socket, server_side=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-port", type=int)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--root", type=Path, required=True, help="folder for the shells' working folders")
    parser.add_argument("--users", required=True, help="DOMAIN:user:password lines (also NTLM_USER_FILE)")
    parser.add_argument("--commands-per-shell", type=int, default=15)
    options = parser.parse_args(argv)
    os.environ["NTLM_USER_FILE"] = options.users
    wine.ensure_prefix()
    app = WsmanApp(WinRSService(options.root, options.commands_per_shell, powershell_stub.job_for), PsrpService())
    users = Users.from_file(options.users)
    servers = [WinRMServer(options.port, app, users, None)]
    if options.tls_port:
        servers.append(WinRMServer(options.tls_port, app, users, (options.cert, options.key)))
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"winrm-host listening on {options.port} (http) {options.tls_port or '-'} (https)", flush=True)
    servers[0].serve_forever()


class WinRMHost(Peer):
    """The test host as a test-bed peer: HTTP and HTTPS ports, a user, a CA that signed its cert.

    Example::

        with WinRMHost() as host:
            host.port, host.tls_port, host.username, host.password, host.ca_path
    """

    name = "winrm-host"
    username = "smsadmin"

    def __init__(self, *, commands_per_shell: int = 15, timeout: float = 120.0) -> None:
        super().__init__(timeout=timeout)
        self.commands_per_shell = commands_per_shell
        self.port = 0
        self.tls_port = 0
        self.password = ""
        self.ca_path: Path | None = None

    def _start(self) -> None:
        assert self.tmp is not None
        wine.wine_binary()  # fail early and clearly when Wine is missing
        self.password = secrets.token_urlsafe(12)
        users = self.tmp / "users"
        # pyspnego matches the domain exactly: a line for "user" and one for "TESTHOST\\user".
        users.write_text(f":{self.username}:{self.password}\nTESTHOST:{self.username}:{self.password}\n")
        users.chmod(0o600)
        self.ca_path, cert, key = make_ca_and_server(self.tmp)
        self.port, self.tls_port = free_port(), free_port()
        (self.tmp / "shells").mkdir()
        self.spawn(
            [sys.executable, "-m", "infra.testbed.winrm_host", "--port", str(self.port), "--tls-port", str(self.tls_port),
             "--cert", str(cert), "--key", str(key), "--root", str(self.tmp / "shells"), "--users", str(users),
             "--commands-per-shell", str(self.commands_per_shell)],
            self._listening,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )

    def _listening(self) -> bool:
        return "listening" in self.log_path.read_text(errors="replace")

    def open_shells(self) -> dict[str, int]:
        """How many WinRS shells (``winrs``) and runspace pools (``psrp``) the host has open."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/testbed/shells", timeout=10) as answer:
            return json.loads(answer.read())

    def wine_processes(self) -> list[int]:
        """Linux pids of Windows processes started in this host's shells (their cwd is below it)."""
        assert self.tmp is not None
        root = str((self.tmp / "shells").resolve())
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/cwd").startswith(root):
                        found.append(int(entry))
                except OSError:
                    continue
        return found


if __name__ == "__main__":
    main()
