// @vitest-environment jsdom
import { describe, expect, it } from "vitest";
import type { Host } from "../lib/types";
import { hostMatches } from "./Hosts";

const web: Host = { name: "web-01", kind: "ssh", where: "deploy@10.0.0.5:22", pinned_keys: 1, legacy: false, labels: ["role=web", "prod"], admins_only: false };

describe("the hosts list's search", () => {
  it("finds a host by part of its name, address or a label, ignoring case and surrounding spaces", () => {
    expect(hostMatches(web, "WEB-0")).toBe(true);
    expect(hostMatches(web, "10.0.0.5")).toBe(true);
    expect(hostMatches(web, " prod ")).toBe(true);
    expect(hostMatches(web, "")).toBe(true);
  });

  it("leaves out a host that matches nowhere", () => {
    expect(hostMatches(web, "db-")).toBe(false);
  });
});
