import { describe, expect, it } from "vitest";
import { OutputBuffer } from "./outputBuffer";

const line = (seq: number) => ({ seq, stream: "stdout", text: `line ${seq}` });

describe("the output buffer", () => {
  it("keeps every line under its capacity", () => {
    const b = new OutputBuffer(5);
    b.push(line(0), line(1), line(2));
    expect(b.length).toBe(3);
    expect(b.dropped).toBe(0);
    expect(b.toArray().map((l) => l.seq)).toEqual([0, 1, 2]);
  });
  it("drops the oldest lines beyond its capacity and counts them", () => {
    const b = new OutputBuffer(1000);
    for (let i = 0; i < 100_000; i++) b.push(line(i));
    expect(b.length).toBe(1000);
    expect(b.dropped).toBe(99_000);
    expect(b.received).toBe(100_000);
    expect(b.at(0).seq).toBe(99_000);
    expect(b.lastSeq).toBe(99_999);
  });
  it("holds at most twice its capacity internally (compaction)", () => {
    const b = new OutputBuffer(10);
    for (let i = 0; i < 1000; i++) {
      b.push(line(i));
      expect((b as unknown as { lines: unknown[] }).lines.length).toBeLessThanOrEqual(21);
    }
  });
  it("refuses a capacity below one", () => {
    expect(() => new OutputBuffer(0)).toThrow();
  });
});
