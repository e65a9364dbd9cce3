/** Small pieces every page uses. */
import { Alert, Tag } from "antd";

export function Problem({ error }: { error: string }) {
  return error ? <Alert type="error" showIcon message={error} style={{ marginBottom: 16 }} /> : null;
}

const STATE_COLOURS: Record<string, string> = {
  COMPLETED: "green", succeeded: "green", FAILED: "red", failed: "red", CRASHED: "red", timed_out: "orange",
  unreachable: "volcano", RUNNING: "blue", running: "blue", PENDING: "gold", SCHEDULED: "default",
  CANCELLED: "default", CANCELLING: "orange", stopped: "default", skipped: "default",
};

export function StateTag({ state }: { state: string }) {
  return <Tag color={STATE_COLOURS[state] ?? "default"}>{state}</Tag>;
}

export const when = (iso: string | null | undefined) => (iso ? new Date(iso).toLocaleString() : "—");
