/** Two versions side by side, changed lines marked. */
import { sideBySide, type DiffRow } from "../lib/sideBySide";

const BACKGROUND: Record<DiffRow["kind"], [string, string]> = {
  same: ["", ""], changed: ["#fff1f0", "#f6ffed"], removed: ["#fff1f0", ""], added: ["", "#f6ffed"],
};

export function DiffView({ oldText, newText, oldLabel, newLabel }: { oldText: string; newText: string; oldLabel: string; newLabel: string }) {
  const rows = sideBySide(oldText, newText);
  const cell = (side: DiffRow["left"], background: string, mark: string) => [
    <td key="n" style={{ color: "#999", textAlign: "right", padding: "0 6px", userSelect: "none" }}>{side?.number ?? ""}</td>,
    <td key="t" style={{ background, whiteSpace: "pre", fontFamily: "monospace", padding: "0 6px", width: "50%" }}>{side ? `${mark}${side.text}` : ""}</td>,
  ];
  return (
    <div style={{ overflowX: "auto" }}>
      <table data-testid="diff" aria-label={`Differences from ${oldLabel} to ${newLabel}`} style={{ borderCollapse: "collapse", width: "100%" }}>
        <thead><tr><th colSpan={2}>{oldLabel}</th><th colSpan={2}>{newLabel}</th></tr></thead>
        <tbody>
          {rows.map((row, i) => (
            <tr key={i} data-kind={row.kind}>
              {cell(row.left, BACKGROUND[row.kind][0], row.kind === "same" ? "  " : "- ")}
              {cell(row.right, BACKGROUND[row.kind][1], row.kind === "same" ? "  " : "+ ")}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
