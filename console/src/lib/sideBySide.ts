/** Two versions of a text as side-by-side rows: equal lines face each other, changes are paired. */
import { diffLines } from "diff";

export type RowKind = "same" | "changed" | "removed" | "added";

export interface DiffRow {
  kind: RowKind;
  left: { number: number; text: string } | null;
  right: { number: number; text: string } | null;
}

function split(value: string): string[] {
  const lines = value.split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  return lines;
}

export function sideBySide(oldText: string, newText: string): DiffRow[] {
  const rows: DiffRow[] = [];
  let left = 1;
  let right = 1;
  let removed: string[] = [];
  const flush = (added: string[]) => {
    const count = Math.max(removed.length, added.length);
    for (let i = 0; i < count; i++) {
      const l = i < removed.length ? { number: left++, text: removed[i] } : null;
      const r = i < added.length ? { number: right++, text: added[i] } : null;
      rows.push({ kind: l && r ? "changed" : l ? "removed" : "added", left: l, right: r });
    }
    removed = [];
  };
  for (const part of diffLines(oldText, newText)) {
    const lines = split(part.value);
    if (part.removed) {
      flush([]);
      removed = lines;
    } else if (part.added) {
      flush(lines);
    } else {
      flush([]);
      for (const text of lines) rows.push({ kind: "same", left: { number: left++, text }, right: { number: right++, text } });
    }
  }
  flush([]);
  return rows;
}
