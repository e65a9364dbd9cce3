import { describe, expect, it, vi, afterEach } from "vitest";
import { allowed, fromRoles, loadPermissions } from "./permissions";

afterEach(() => vi.unstubAllGlobals());

describe("permissions from roles", () => {
  it("gives a viewer no run, stop, add or admin controls", () => {
    const p = fromRoles(["sms-viewer"]);
    for (const cap of ["run.start", "run.stop", "script.add", "host.add", "access.manage", "webhook.manage"] as const) {
      expect(allowed(p, cap)).toBe(false);
    }
  });
  it("gives an operator run and stop, not authoring", () => {
    const p = fromRoles(["sms-operator"]);
    expect([allowed(p, "run.start"), allowed(p, "run.stop"), allowed(p, "script.add")]).toEqual([true, true, false]);
  });
  it("gives an author script.add only", () => {
    const p = fromRoles(["sms-author", "offline_access"]);
    expect([allowed(p, "script.add"), allowed(p, "run.start"), allowed(p, "access.manage")]).toEqual([true, false, false]);
  });
  it("gives an admin everything", () => {
    const p = fromRoles(["sms-admin"]);
    expect(Object.values(p.can).every(Boolean)).toBe(true);
  });
  it("treats unknown permissions as not allowed", () => {
    expect(allowed(null, "run.start")).toBe(false);
    expect(allowed({ roles: [], can: {} }, "run.start")).toBe(false);
  });
});

describe("loading permissions", () => {
  const reply = (status: number, body: unknown) => vi.fn().mockResolvedValue(new Response(JSON.stringify(body), { status }));

  it("uses the gateway's answer when it has /me/permissions", async () => {
    vi.stubGlobal("fetch", reply(200, { roles: ["sms-operator"], can: { "run.start": false, "run.stop": true } }));
    const p = await loadPermissions(["sms-operator"]);
    expect(allowed(p, "run.start")).toBe(false); // narrowed by an access rule: the gateway knows best
    expect(allowed(p, "run.stop")).toBe(true);
  });
  it("derives them from the roles when the gateway answers 404", async () => {
    vi.stubGlobal("fetch", reply(404, { detail: "Not Found" }));
    expect(await loadPermissions(["sms-operator"])).toEqual(fromRoles(["sms-operator"]));
  });
  it("does not hide a real failure", async () => {
    vi.stubGlobal("fetch", reply(500, { detail: "boom" }));
    await expect(loadPermissions(["sms-admin"])).rejects.toThrow("boom");
  });
});
