import { describe, expect, it } from "vitest";
import { rememberCsrfToken, requestHeaders } from "./api";

describe("requestHeaders", () => {
  it("sends the session's CSRF token with a body-less state change (a stop)", () => {
    rememberCsrfToken("tok-1");
    expect(requestHeaders("POST", false)).toEqual({ Accept: "application/json", "X-CSRF-Token": "tok-1" });
  });

  it("sends it with JSON changes too, and never with reads", () => {
    rememberCsrfToken("tok-2");
    expect(requestHeaders("PATCH", true)["X-CSRF-Token"]).toBe("tok-2");
    expect(requestHeaders("GET", false)).toEqual({ Accept: "application/json" });
  });

  it("sends no token before the session is known", () => {
    rememberCsrfToken(undefined);
    expect(requestHeaders("DELETE", false)).toEqual({ Accept: "application/json" });
  });
});
