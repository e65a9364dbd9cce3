/** A run's output as a virtualised list: only the visible rows are in the page, so unbounded
 * output does not slow the browser; it follows the end unless the reader scrolled up. */
import { useEffect, useRef } from "react";
import { useVirtualizer } from "@tanstack/react-virtual";
import type { OutputBuffer } from "../lib/outputBuffer";

const ROW = 18;

export function OutputView({ buffer, version }: { buffer: OutputBuffer; version: number }) {
  const parent = useRef<HTMLDivElement>(null);
  const atEnd = useRef(true);
  const rows = useVirtualizer({ count: buffer.length, getScrollElement: () => parent.current, estimateSize: () => ROW, overscan: 20 });
  useEffect(() => {
    if (atEnd.current && buffer.length) rows.scrollToIndex(buffer.length - 1, { align: "end" });
  }, [version, buffer.length, rows]);
  return (
    <div
      ref={parent}
      data-testid="output"
      role="log"
      aria-label="Run output"
      tabIndex={0}
      onScroll={(e) => {
        const el = e.currentTarget;
        atEnd.current = el.scrollHeight - el.scrollTop - el.clientHeight < ROW * 2;
      }}
      style={{ height: 420, overflow: "auto", background: "#0b1021", color: "#e6e6e6", fontFamily: "monospace", fontSize: 13, borderRadius: 6 }}
    >
      <div style={{ height: rows.getTotalSize(), position: "relative" }}>
        {rows.getVirtualItems().map((item) => {
          const line = buffer.at(item.index);
          return (
            <div key={item.key} className="output-line" style={{ position: "absolute", top: 0, transform: `translateY(${item.start}px)`, height: ROW, whiteSpace: "pre", padding: "0 8px", color: line.stream === "stderr" ? "#ff7875" : undefined }}>
              {line.host ? `[${line.host}] ` : ""}{line.text}
            </div>
          );
        })}
      </div>
    </div>
  );
}
