/**
 * Follows a run's output: the server-sent events of `GET /api/v1/runs/{id}/output/stream`
 * (CONTRACTS.md) when the gateway has them, else polling `GET /api/v1/runs/{id}/logs`
 * with an offset. Lines go to the caller in batches; the state when the run ends.
 */
import { get } from "./api";
import type { OutputLine } from "./outputBuffer";

export interface RunEnd {
  state: string;
  exit_code: number | null;
}

export interface Follower {
  stop(): void;
  readonly mode: "stream" | "poll";
}

interface Handlers {
  lines(lines: OutputLine[]): void;
  state(end: RunEnd): void;
}

const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED", "CRASHED"]);
export const POLL_MS = 1000;

export function followRun(runId: string, handlers: Handlers): Follower {
  let stopped = false;
  let mode: "stream" | "poll" = "stream";
  let timer: ReturnType<typeof setTimeout> | undefined;
  let source: EventSource | null = null;
  const id = encodeURIComponent(runId);

  const poll = async (offset: number) => {
    if (stopped) return;
    let next = offset;
    let ended = false;
    try {
      const lines = await get<{ message: string; level: string }[]>(`/api/v1/runs/${id}/logs?offset=${offset}&limit=5000`);
      if (lines.length) {
        handlers.lines(lines.map((l, i) => ({ seq: offset + i, stream: l.level === "WARNING" ? "stderr" : "stdout", text: l.message })));
        next = offset + lines.length;
      }
      const run = await get<RunEnd>(`/api/v1/runs/${id}`);
      handlers.state({ state: run.state, exit_code: run.exit_code });
      ended = TERMINAL.has(run.state) && lines.length === 0;
    } catch {
      // a transient error: try again at the next tick
    }
    if (!ended && !stopped) timer = setTimeout(() => poll(next), POLL_MS);
  };

  const startPolling = () => {
    mode = "poll";
    source?.close();
    source = null;
    void poll(0);
  };

  if (typeof EventSource === "undefined") {
    startPolling();
  } else {
    let heard = false;
    source = new EventSource(`/api/v1/runs/${id}/output/stream`, { withCredentials: true });
    source.addEventListener("line", (event) => {
      heard = true;
      handlers.lines([JSON.parse((event as MessageEvent).data) as OutputLine]);
    });
    source.addEventListener("state", (event) => {
      heard = true;
      const end = JSON.parse((event as MessageEvent).data) as RunEnd;
      handlers.state(end);
      if (TERMINAL.has(end.state)) source?.close();
    });
    source.onerror = () => {
      if (!heard) startPolling(); // no stream here (404, older gateway): poll instead
      // once heard, EventSource reconnects by itself with Last-Event-ID
    };
  }

  return {
    stop() {
      stopped = true;
      source?.close();
      if (timer) clearTimeout(timer);
    },
    get mode() {
      return mode;
    },
  };
}
