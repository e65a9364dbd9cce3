import { afterEach, describe, expect, it, vi } from "vitest";
import { followRun } from "./liveOutput";

afterEach(() => {
  vi.unstubAllGlobals();
  vi.useRealTimers();
});

/** An EventSource that fails before any event: a gateway without the stream endpoint. */
class NoStream {
  onerror: (() => void) | null = null;
  constructor(readonly url: string) {
    setTimeout(() => this.onerror?.(), 0);
  }
  addEventListener() {}
  close() {}
}

describe("following a run", () => {
  it("polls the logs with an offset when there is no stream, until the run ends", async () => {
    vi.stubGlobal("EventSource", NoStream);
    const answers: Record<string, unknown[]> = {
      "/api/v1/runs/r1/logs?offset=0&limit=5000": [{ message: "one", level: "INFO" }, { message: "two", level: "WARNING" }],
      "/api/v1/runs/r1/logs?offset=2&limit=5000": [],
    };
    const fetch = vi.fn(async (url: string) => {
      const body = url in answers ? answers[url] : { state: url.endsWith("/r1") && fetch.mock.calls.length > 2 ? "COMPLETED" : "RUNNING", exit_code: 0 };
      return new Response(JSON.stringify(body), { status: 200 });
    });
    vi.stubGlobal("fetch", fetch);
    const lines: string[] = [];
    const states: string[] = [];
    const follower = followRun("r1", { lines: (l) => lines.push(...l.map((x) => `${x.stream}:${x.text}`)), state: (s) => states.push(s.state) });
    await vi.waitFor(() => expect(states).toContain("COMPLETED"), { timeout: 5000 });
    follower.stop();
    expect(follower.mode).toBe("poll");
    expect(lines).toEqual(["stdout:one", "stderr:two"]);
    expect(fetch.mock.calls.map((c) => c[0])).toContain("/api/v1/runs/r1/logs?offset=2&limit=5000");
  });

  it("uses the stream's events when the gateway has them", () => {
    const listeners: Record<string, (e: MessageEvent) => void> = {};
    class Stream {
      onerror: (() => void) | null = null;
      closed = false;
      constructor(readonly url: string) { created.push(this); }
      addEventListener(name: string, fn: (e: MessageEvent) => void) { listeners[name] = fn; }
      close() { this.closed = true; }
    }
    const created: Stream[] = [];
    vi.stubGlobal("EventSource", Stream);
    const lines: string[] = [];
    const ends: string[] = [];
    const follower = followRun("r 2", { lines: (l) => lines.push(...l.map((x) => x.text)), state: (s) => ends.push(s.state) });
    expect(created[0].url).toBe("/api/v1/runs/r%202/output/stream");
    listeners.line(new MessageEvent("line", { data: JSON.stringify({ seq: 0, stream: "stdout", host: "local", text: "hi" }) }));
    created[0].onerror?.(); // a dropped connection after events: EventSource resumes, no polling
    listeners.state(new MessageEvent("state", { data: JSON.stringify({ state: "COMPLETED", exit_code: 0 }) }));
    expect(lines).toEqual(["hi"]);
    expect(ends).toEqual(["COMPLETED"]);
    expect(follower.mode).toBe("stream");
    expect(created[0].closed).toBe(true);
  });
});
