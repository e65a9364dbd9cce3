/** The monitoring API of CONTRACTS.md (branch monitor): the dashboard's overview and log search. */
import { get, query } from "./api";

export type Window = "1h" | "6h" | "24h" | "7d";

export interface Overview {
  window: Window;
  generated_at: string;
  runs_by_state: { t: string; state: string; count: number }[];
  scripts: { script: string; runs: number; success_rate: number; p50_seconds: number; p95_seconds: number; failing_now: boolean }[];
  in_progress: number;
  hosts: { host: string; healthy: boolean; checked_at: string }[];
  recent_audit: { at: string; actor: string; action: string; target: string }[];
}

export interface LogHit {
  at: string;
  run: string;
  script: string;
  host: string;
  stream: string;
  line: string;
}

export interface LogSearch {
  q?: string;
  script?: string;
  host?: string;
  run?: string;
  since?: string;
  until?: string;
  limit?: number;
}

export const overview = (window: Window) => get<Overview>(`/api/v1/monitor/overview${query({ window })}`);

export const searchLogs = (search: LogSearch) =>
  get<{ total: number; hits: LogHit[] }>(`/api/v1/logs/search${query({ ...search })}`);

/** Runs per time bucket, one column per state (for a stacked chart). */
export function stateSeries(points: Overview["runs_by_state"]): { t: string; counts: Record<string, number>; total: number }[] {
  const buckets = new Map<string, Record<string, number>>();
  for (const p of points) {
    const counts = buckets.get(p.t) ?? {};
    counts[p.state] = (counts[p.state] ?? 0) + p.count;
    buckets.set(p.t, counts);
  }
  return [...buckets.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([t, counts]) => ({ t, counts, total: Object.values(counts).reduce((a, b) => a + b, 0) }));
}
