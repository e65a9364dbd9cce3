/** Output lines of a run, at most ``capacity`` of them: the oldest are dropped and counted. */

export interface OutputLine {
  seq: number;
  stream: string;
  host?: string;
  text: string;
}

export class OutputBuffer {
  private lines: OutputLine[] = [];
  private start = 0;
  dropped = 0;
  received = 0;

  constructor(readonly capacity: number) {
    if (capacity < 1) throw new Error("capacity must be at least 1");
  }

  push(...lines: OutputLine[]): void {
    for (const line of lines) {
      this.lines.push(line);
      this.received += 1;
    }
    const excess = this.lines.length - this.start - this.capacity;
    if (excess > 0) {
      this.start += excess;
      this.dropped += excess;
      if (this.start > this.capacity) {  // compact now and then, not on every line
        this.lines = this.lines.slice(this.start);
        this.start = 0;
      }
    }
  }

  get length(): number {
    return this.lines.length - this.start;
  }

  at(index: number): OutputLine {
    return this.lines[this.start + index];
  }

  /** The highest sequence number held (to resume a stream), or -1. */
  get lastSeq(): number {
    return this.length ? this.at(this.length - 1).seq : -1;
  }

  toArray(): OutputLine[] {
    return this.lines.slice(this.start);
  }
}
