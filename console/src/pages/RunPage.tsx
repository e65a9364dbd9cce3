/** One run: state, exit code, per-host results, live output, stop, and its page in the Prefect UI. */
import { useEffect, useMemo, useRef, useState } from "react";
import { Link, useParams } from "react-router-dom";
import { Alert, App, Button, Descriptions, Popconfirm, Space, Table, Typography } from "antd";
import { api, get } from "../lib/api";
import { followRun, type RunEnd } from "../lib/liveOutput";
import { OutputBuffer } from "../lib/outputBuffer";
import { allowed } from "../lib/permissions";
import type { HostResult, RunDetail } from "../lib/types";
import { useSession } from "../session";
import { Problem, StateTag } from "./common";
import { OutputView } from "./OutputView";

/** Lines held in the page; older ones are dropped (and counted) so memory stays bounded. */
export const MAX_LINES = 50_000;
const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED", "CRASHED"]);
const RECORD_POLL_MS = 5_000;

export function RunPage() {
  const { id = "" } = useParams();
  const { permissions } = useSession();
  const { message } = App.useApp();
  const buffer = useMemo(() => new OutputBuffer(MAX_LINES), [id]);
  const [version, setVersion] = useState(0);
  const [run, setRun] = useState<RunDetail | null>(null);
  const [end, setEnd] = useState<RunEnd | null>(null);
  const [error, setError] = useState("");
  const [mode, setMode] = useState("");
  const pending = useRef(0);

  useEffect(() => {
    get<RunDetail>(`/api/v1/runs/${encodeURIComponent(id)}`).then(setRun).catch((e: Error) => setError(e.message));
    const follower = followRun(id, {
      lines(lines) {
        buffer.push(...lines);
        if (!pending.current) pending.current = requestAnimationFrame(() => { pending.current = 0; setVersion((v) => v + 1); });
      },
      state(next) {
        setEnd(next);
        setMode(follower.mode);
      },
    });
    return () => {
      follower.stop();
      cancelAnimationFrame(pending.current);
    };
  }, [id, buffer]);

  useEffect(() => {  // the run's record again when it ends (message, per-host results)
    if (end && TERMINAL.has(end.state)) get<RunDetail>(`/api/v1/runs/${encodeURIComponent(id)}`).then(setRun).catch(() => undefined);
  }, [id, end?.state]);

  useEffect(() => {  // while it goes on, its state (Pending → Running → Cancelling) every few seconds
    if (end) return undefined;
    const timer = window.setInterval(() => {
      get<RunDetail>(`/api/v1/runs/${encodeURIComponent(id)}`).then(setRun).catch(() => undefined);
    }, RECORD_POLL_MS);
    return () => window.clearInterval(timer);
  }, [id, end]);

  const state = end?.state ?? run?.state ?? "…";
  const exitCode = end?.exit_code ?? run?.exit_code;
  const stop = async () => {
    try {
      const answer = await api<{ state: string }>("POST", `/api/v1/runs/${encodeURIComponent(id)}/stop`);
      message.info(`Stop requested: ${answer.state}`);
    } catch (e) {
      setError((e as Error).message);
    }
  };
  return (
    <>
      <Typography.Title level={3}>Run {id.slice(0, 8)}</Typography.Title>
      <Problem error={error} />
      <Descriptions size="small" column={{ xs: 1, md: 3 }} items={[
        { key: "s", label: "Script", children: run ? <Link to={`/scripts/${encodeURIComponent(run.script)}`}>{run.script}</Link> : "…" },
        { key: "h", label: "Host", children: run?.host ?? "…" },
        { key: "st", label: "State", children: <span data-testid="run-state"><StateTag state={state} /></span> },
        { key: "e", label: "Exit code", children: <span data-testid="exit-code">{exitCode ?? "—"}</span> },
        { key: "m", label: "Message", children: run?.message || "—" },
        { key: "p", label: "Prefect", children: <a href={`/prefect/runs/flow-run/${encodeURIComponent(id)}`}>Open in the Prefect UI</a> },
      ]} />
      <Space style={{ margin: "16px 0" }}>
        {allowed(permissions, "run.stop") && !TERMINAL.has(state) && (
          <Popconfirm title="Stop this run? Its processes on the host are killed." onConfirm={stop} okText="Stop">
            <Button danger>Stop</Button>
          </Popconfirm>
        )}
        <span aria-live="polite">{buffer.received} lines{mode === "poll" ? " (polling)" : ""}</span>
      </Space>
      {buffer.dropped > 0 && (
        <Alert type="info" showIcon style={{ marginBottom: 8 }} message={`${buffer.dropped} earlier lines dropped from this page (it keeps the newest ${MAX_LINES}); search them in Logs.`} />
      )}
      <OutputView buffer={buffer} version={version} />
      {run?.hosts?.length ? (
        <>
          <Typography.Title level={4} style={{ marginTop: 16 }}>Hosts</Typography.Title>
          <Table<HostResult> size="small" rowKey="host" dataSource={run.hosts} columns={[
            { title: "Host", dataIndex: "host" }, { title: "State", dataIndex: "state", render: (s: string) => <StateTag state={s} /> },
            { title: "Exit", dataIndex: "exit_code" }, { title: "Seconds", dataIndex: "seconds", render: (s: number | null) => s?.toFixed(1) ?? "—" },
            { title: "Message", dataIndex: "message" },
          ]} />
        </>
      ) : null}
    </>
  );
}
