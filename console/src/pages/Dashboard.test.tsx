// @vitest-environment jsdom
import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen, within } from "@testing-library/react";
import { MemoryRouter } from "react-router-dom";
import overview from "../test/recorded/overview-24h.json";
import { stateSeries } from "../lib/monitor";
import { Dashboard } from "./Dashboard";

afterEach(() => vi.unstubAllGlobals());

describe("the dashboard on a recorded overview answer", () => {
  it("asks for the window and shows each tile", async () => {
    const fetch = vi.fn().mockResolvedValue(new Response(JSON.stringify(overview), { status: 200 }));
    vi.stubGlobal("fetch", fetch);
    render(<MemoryRouter><Dashboard /></MemoryRouter>);
    expect(await screen.findByText("rotate-logs")).toBeTruthy();
    expect(fetch.mock.calls[0][0]).toBe("/api/v1/monitor/overview?window=24h");
    const failing = screen.getByText("Scripts failing now").closest(".ant-statistic") as HTMLElement;
    expect(within(failing).getByText("1")).toBeTruthy();
    const hosts = screen.getByText("Hosts healthy").closest(".ant-statistic") as HTMLElement;
    expect(hosts.textContent).toContain("1 / 2");
    expect(screen.getByText("95%")).toBeTruthy();
    expect(screen.getByText("failing")).toBeTruthy();
    expect(screen.getByText("unhealthy")).toBeTruthy();
    expect(screen.getByText(/otto/)).toBeTruthy();
  });
  it("shows the gateway's reason when it refuses (throttled)", async () => {
    vi.stubGlobal("fetch", vi.fn().mockResolvedValue(new Response(JSON.stringify({ detail: "too many requests; retry in 5 s" }), { status: 429 })));
    render(<MemoryRouter><Dashboard /></MemoryRouter>);
    expect(await screen.findByText("too many requests; retry in 5 s")).toBeTruthy();
  });
});

describe("runs by state", () => {
  it("groups the points per time bucket in time order", () => {
    const series = stateSeries(overview.runs_by_state);
    expect(series.map((s) => s.total)).toEqual([14, 10]);
    expect(series[0].counts).toEqual({ COMPLETED: 12, FAILED: 2 });
  });
});
