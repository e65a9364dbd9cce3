// @vitest-environment jsdom
import { describe, expect, it } from "vitest";
import { previewQuery } from "./Access";

describe("the access preview's query", () => {
  it("repeats role= and group= for each one given, as the gateway reads them", () => {
    expect(previewQuery("paula", ["sms-operator", "sms-author"], ["team payments"]))
      .toBe("?user=paula&role=sms-operator&role=sms-author&group=team+payments");
  });

  it("asks with the user alone when no role or group is given", () => {
    expect(previewQuery("viola")).toBe("?user=viola");
  });
});
