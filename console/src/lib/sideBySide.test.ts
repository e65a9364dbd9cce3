import { describe, expect, it } from "vitest";
import { sideBySide } from "./sideBySide";

describe("side-by-side diff", () => {
  it("pairs a changed line with its replacement", () => {
    const rows = sideBySide("echo a\necho b\necho c\n", "echo a\necho B\necho c\n");
    expect(rows.map((r) => r.kind)).toEqual(["same", "changed", "same"]);
    expect(rows[1].left).toEqual({ number: 2, text: "echo b" });
    expect(rows[1].right).toEqual({ number: 2, text: "echo B" });
  });
  it("numbers each side on its own when lines are added or removed", () => {
    const rows = sideBySide("a\nb\n", "a\nx\ny\nb\n");
    expect(rows.map((r) => r.kind)).toEqual(["same", "added", "added", "same"]);
    expect(rows[3].left?.number).toBe(2);
    expect(rows[3].right?.number).toBe(4);
    const removed = sideBySide("a\nb\nc\n", "a\n");
    expect(removed.map((r) => r.kind)).toEqual(["same", "removed", "removed"]);
    expect(removed[2].right).toBeNull();
  });
  it("shows more removed than added lines as changed then removed", () => {
    const rows = sideBySide("1\n2\n3\n", "9\n");
    expect(rows.map((r) => r.kind)).toEqual(["changed", "removed", "removed"]);
  });
  it("finds nothing between equal texts", () => {
    expect(sideBySide("x\ny", "x\ny").every((r) => r.kind === "same")).toBe(true);
  });
});
