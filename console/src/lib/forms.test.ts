import { describe, expect, it } from "vitest";
import { readCron } from "./cron";
import { initialValues, runParameters, type ParameterSpec } from "./params";

describe("cron preview", () => {
  it("reads a valid expression in words", () => {
    const r = readCron("0 2 * * 1-5");
    expect(r.ok).toBe(true);
    expect(r.ok && r.text).toMatch(/02:00.*Monday through Friday/);
  });
  it("explains a wrong field count", () => {
    const r = readCron("0 2 * *");
    expect(r).toEqual({ ok: false, error: expect.stringContaining("5 fields") });
    expect(readCron("0 2 * * * *").ok).toBe(false); // seconds are not the catalog's cron
  });
  it("refuses an out-of-range value", () => {
    expect(readCron("61 2 * * *").ok).toBe(false);
  });
});

const declared: ParameterSpec[] = [
  { name: "days", type: "integer", default: 7 },
  { name: "mode", type: "string", required: true, choices: ["full", "quick"] },
  { name: "ratio", type: "number" },
  { name: "dry_run", type: "boolean" },
  { name: "ticket", type: "string", pattern: "[A-Z]+-\\d+" },
];

describe("run parameters form", () => {
  it("starts from the declared defaults", () => {
    expect(initialValues(declared)).toEqual({ days: 7, mode: undefined, ratio: undefined, dry_run: false, ticket: undefined });
  });
  it("sends typed values and leaves out empty optional ones", () => {
    expect(runParameters(declared, { days: "30", mode: "full", ratio: "", dry_run: true })).toEqual({
      ok: true, parameters: { days: 30, mode: "full", dry_run: true },
    });
  });
  it("names a missing required parameter", () => {
    expect(runParameters(declared, { days: 1 })).toEqual({ ok: false, error: "mode is required" });
  });
  it("refuses a non-integer and a pattern mismatch", () => {
    expect(runParameters(declared, { mode: "full", days: "1.5" })).toEqual({ ok: false, error: "days must be a whole number" });
    expect(runParameters(declared, { mode: "full", ticket: "ops-1" })).toEqual({ ok: false, error: "ticket must match [A-Z]+-\\d+" });
    expect(runParameters(declared, { mode: "full", ticket: "OPS-12" }).ok).toBe(true);
  });
});
