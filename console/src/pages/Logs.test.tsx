// @vitest-environment jsdom
import { afterEach, describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen } from "@testing-library/react";
import { MemoryRouter } from "react-router-dom";
import answer from "../test/recorded/logs-search.json";
import { Logs } from "./Logs";

afterEach(() => vi.unstubAllGlobals());

describe("log search on a recorded answer", () => {
  it("sends the filters and lists the hits with a link to the run", async () => {
    const fetch = vi.fn().mockResolvedValue(new Response(JSON.stringify(answer), { status: 200 }));
    vi.stubGlobal("fetch", fetch);
    render(<MemoryRouter><Logs /></MemoryRouter>);
    fireEvent.change(screen.getByLabelText("Text"), { target: { value: "hello" } });
    fireEvent.change(screen.getByLabelText("Script"), { target: { value: "hello-bash" } });
    fireEvent.click(screen.getByRole("button", { name: "Search" }));
    expect(await screen.findByText("hello from the console")).toBeTruthy();
    expect(fetch.mock.calls[0][0]).toBe("/api/v1/logs/search?q=hello&script=hello-bash&limit=200");
    expect(screen.getByText("1 matching lines")).toBeTruthy();
    expect(screen.getByRole("link", { name: "6f1c2a9e" }).getAttribute("href")).toBe("/runs/6f1c2a9e-0000-4000-8000-000000000001");
  });
});
