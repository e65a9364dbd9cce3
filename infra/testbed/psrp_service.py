"""PSRP runspace pools and pipelines of the loopback WinRM test host ([MS-PSRP] over WS-Management).

The PowerShell resource URI (``http://schemas.microsoft.com/powershell/Microsoft.PowerShell``)
reuses the WinRS verbs: Create opens a runspace pool (its ``creationXml`` carries the first PSRP
fragments), Command creates a pipeline (the CreatePipeline fragment is its argument), Send carries
more fragments, Receive returns the server's fragments on the ``stdout`` stream, Signal
``powershell/signal/crtl_c`` stops a pipeline and ``terminate`` closes it, Delete closes the pool.
The PSRP state machines, fragmenting and CLIXML serialisation are psrpcore's server-side classes
(:class:`psrpcore.ServerRunspacePool`, :class:`psrpcore.ServerPipeline`).

There is no PowerShell on Linux: a pipeline's script is answered by
:func:`infra.testbed.powershell_stub.pipeline_body`, the same explicit interpreter that answers
``powershell.exe -EncodedCommand`` in WinRS shells. Its stdout lines become output objects
(strings), its stderr lines error records, and its exit code the final ``[int]`` object, which is
how the SMS wrapper reports the script's exit code.
"""

from __future__ import annotations

import base64
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field

import psrpcore
from psrpcore import PSRPPayload, StreamType
from psrpcore.types import NETException, PSInvocationState

from infra.testbed import powershell_stub
from infra.testbed.idle_expiry import start_expiry
from infra.testbed.winrs_service import SHELL_NOT_FOUND, TIMED_OUT, WinRSFault

_DEFAULT_IDLE_SECONDS = 180.0
_FRAGMENT_BYTES = 64 * 1024


@dataclass
class Pool:
    """One runspace pool: psrpcore's state machine, and the payloads waiting for a Receive
    (keyed by pipeline id; None for the pool itself)."""

    id: str
    idle_seconds: float
    runspace: psrpcore.ServerRunspacePool = field(default_factory=psrpcore.ServerRunspacePool)
    outgoing: dict[uuid.UUID | None, bytearray] = field(default_factory=dict)
    jobs: dict[uuid.UUID, powershell_stub.ScriptedJob] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)
    last_used: float = field(default_factory=time.monotonic)

    def feed(self, data: bytes, pipeline: uuid.UUID | None = None) -> None:
        """Hands client fragments to psrpcore and acts on the events they complete."""
        with self.changed:
            self.runspace.receive_data(PSRPPayload(data, StreamType.default, pipeline))
            while (event := self.runspace.next_event()) is not None:
                if isinstance(event, psrpcore.CreatePipelineEvent):
                    self._start(event.pipeline_id)
            self._collect()

    def _collect(self) -> None:
        """Moves what psrpcore has to send into the per-target buffers (call with the lock held)."""
        while (payload := self.runspace.data_to_send(_FRAGMENT_BYTES)) is not None:
            self.outgoing.setdefault(payload.pipeline_id, bytearray()).extend(payload.data)
        self.changed.notify_all()

    def _start(self, pipeline_id: uuid.UUID) -> None:
        pipeline = self.runspace.pipeline_table[pipeline_id]
        commands = pipeline.metadata.commands if pipeline.metadata else []
        script = "\n".join(str(c.command_text) for c in commands if c.is_script)
        pipeline.start()
        job = powershell_stub.ScriptedJob(powershell_stub.pipeline_body(script))
        self.jobs[pipeline_id] = job
        threading.Thread(target=self._pump, args=(pipeline, job), daemon=True).start()

    def _pump(self, pipeline: psrpcore.ServerPipeline, job: powershell_stub.ScriptedJob) -> None:
        """Turns the interpreter's stdout lines into output objects and its stderr lines into
        error records, as they come; then the exit code object and the Completed state."""
        readers = [threading.Thread(target=self._lines, args=(pipeline, job.stderr, True), daemon=True)]
        readers[0].start()
        self._lines(pipeline, job.stdout, False)
        readers[0].join()
        code = job.wait()
        with self.changed:
            if pipeline.state == PSInvocationState.Running:
                pipeline.write_output(code)
                pipeline.complete()
            self._collect()

    def _lines(self, pipeline: psrpcore.ServerPipeline, source: object, error: bool) -> None:
        for raw in source:  # type: ignore[attr-defined]
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            with self.changed:
                if pipeline.state != PSInvocationState.Running:
                    continue
                if error:
                    pipeline.write_error(NETException(Message=line), fully_qualified_error_id="TestHostError")
                else:
                    pipeline.write_output(line)
                self._collect()

    def receive(self, pipeline: uuid.UUID | None, timeout: float) -> bytes:
        """The fragments for ``pipeline`` (or the pool), waiting up to ``timeout`` for some."""
        with self.changed:
            if not self.changed.wait_for(lambda: self.outgoing.get(pipeline), timeout):
                raise WinRSFault(TIMED_OUT, "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.")
            data = bytes(self.outgoing.pop(pipeline))
            return data

    def stop(self, pipeline_id: uuid.UUID) -> None:
        """Ctrl+C to a pipeline: its interpreter is ended and the client told it Stopped."""
        with self.changed:
            job = self.jobs.get(pipeline_id)
            pipeline = self.runspace.pipeline_table.get(pipeline_id)
            if job is not None:
                job.end(signal.SIGINT)
            if pipeline is not None and pipeline.state == PSInvocationState.Running:
                pipeline.stop()
            self._collect()

    def close(self) -> None:
        with self.changed:
            for job in self.jobs.values():
                job.end(signal.SIGKILL)
            self.jobs.clear()


class PsrpService:
    """All runspace pools of one test host."""

    def __init__(self) -> None:
        self._pools: dict[str, Pool] = {}
        self._lock = threading.Lock()
        start_expiry(self._lock, self._pools, lambda item: item.close())

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._pools)

    def _pool(self, shell_id: str) -> Pool:
        with self._lock:
            pool = self._pools.get(shell_id.upper())
        if pool is None:
            raise WinRSFault(SHELL_NOT_FOUND, f"The request for the runspace pool with ShellId {shell_id} failed because it was not found on the server.")
        pool.last_used = time.monotonic()
        return pool

    def create(self, shell_id: str | None, creation: str, idle_seconds: float | None) -> str:
        pool = Pool((shell_id or str(uuid.uuid4())).upper(), idle_seconds or _DEFAULT_IDLE_SECONDS)
        pool.feed(base64.b64decode(creation))
        with self._lock:
            self._pools[pool.id] = pool
        return pool.id

    def command(self, shell_id: str, command_id: str, first_fragment: str) -> str:
        pool = self._pool(shell_id)
        pipeline_id = uuid.UUID(command_id)
        psrpcore.ServerPipeline(pool.runspace, pipeline_id)
        pool.feed(base64.b64decode(first_fragment), pipeline_id)
        return command_id.upper()

    def send(self, shell_id: str, command_id: str | None, data: bytes) -> None:
        self._pool(shell_id).feed(data, uuid.UUID(command_id) if command_id else None)

    def receive(self, shell_id: str, command_id: str | None, timeout: float) -> bytes:
        return self._pool(shell_id).receive(uuid.UUID(command_id) if command_id else None, timeout)

    def signal(self, shell_id: str, command_id: str, code: str) -> None:
        pool = self._pool(shell_id)
        if code.endswith("crtl_c") or code.endswith("ctrl_c"):
            pool.stop(uuid.UUID(command_id))

    def delete(self, shell_id: str) -> None:
        pool = self._pool(shell_id)
        with self._lock:
            self._pools.pop(pool.id, None)
        pool.close()

