/** One script: run it, its versions (push, side-by-side diff) and its settings. */
import { useEffect, useState } from "react";
import { Link, useParams } from "react-router-dom";
import { App, Button, Descriptions, Form, Input, InputNumber, Select, Space, Table, Tabs, Tag, Typography } from "antd";
import { api, get } from "../lib/api";
import { allowed } from "../lib/permissions";
import type { RunRow, Script, Version } from "../lib/types";
import { useLoad } from "../lib/useLoad";
import { useSession } from "../session";
import { CodeEditor } from "./CodeEditor";
import { Problem, when } from "./common";
import { DiffView } from "./DiffView";
import { RunForm } from "./RunForm";
import { ScheduleFields } from "./ScheduleFields";

const path = (name: string) => `/api/v1/scripts/${encodeURIComponent(name)}`;

function Versions({ script, onPushed }: { script: Script; onPushed: () => void }) {
  const { permissions } = useSession();
  const { message } = App.useApp();
  const versions = useLoad(() => get<Version[]>(`${path(script.name)}/versions`), [script.name, script.newest_version]);
  const newest = script.newest_version ?? 1;
  const [from, setFrom] = useState(Math.max(1, newest - 1));
  const [to, setTo] = useState(newest);
  const [texts, setTexts] = useState<[string, string] | null>(null);
  const [draft, setDraft] = useState<string | null>(null);
  const [comment, setComment] = useState("");
  const [error, setError] = useState("");
  useEffect(() => { setFrom(Math.max(1, newest - 1)); setTo(newest); }, [newest]);
  useEffect(() => {
    Promise.all([from, to].map((n) => get<Version>(`${path(script.name)}/versions/${n}`)))
      .then(([a, b]) => setTexts([a.content ?? "", b.content ?? ""]))
      .catch((e: Error) => setError(e.message));
  }, [script.name, from, to]);
  const push = async () => {
    try {
      const answer = await api<{ created: boolean; version: Version }>("POST", `${path(script.name)}/versions`, { content: draft, comment });
      message.success(answer.created ? `Version ${answer.version.number} stored` : "Same as the newest version: nothing stored");
      setDraft(null);
      onPushed();
    } catch (e) {
      setError((e as Error).message);
    }
  };
  const numbers = (versions.data ?? []).map((v) => ({ value: v.number, label: `v${v.number}` }));
  return (
    <>
      <Problem error={error || versions.error} />
      {allowed(permissions, "script.add") && draft === null && (
        <Button disabled={!texts} onClick={() => texts && setDraft(texts[1])} style={{ marginBottom: 16 }}>Push a new version…</Button>
      )}
      {draft !== null && (
        <div style={{ marginBottom: 16 }}>
          <CodeEditor interpreter={script.interpreter} value={draft} onChange={setDraft} label="New version content" />
          <Space style={{ marginTop: 8 }}>
            <Input aria-label="Version comment" placeholder="What changed" value={comment} onChange={(e) => setComment(e.target.value)} style={{ width: 360 }} />
            <Button type="primary" onClick={push}>Store version</Button>
            <Button onClick={() => setDraft(null)}>Cancel</Button>
          </Space>
        </div>
      )}
      <Table size="small" rowKey="number" pagination={false} dataSource={versions.data ?? []} columns={[
        { title: "Version", dataIndex: "number" }, { title: "Author", dataIndex: "author" },
        { title: "Created", dataIndex: "created_at", render: when }, { title: "Comment", dataIndex: "comment" },
        { title: "SHA-256", dataIndex: "sha256", render: (s: string) => <code>{s.slice(0, 12)}</code> },
      ]} />
      <Space style={{ margin: "16px 0" }}>
        Compare <Select aria-label="From version" value={from} onChange={setFrom} options={numbers} style={{ width: 90 }} />
        with <Select aria-label="To version" value={to} onChange={setTo} options={numbers} style={{ width: 90 }} />
      </Space>
      {texts && <DiffView oldText={texts[0]} newText={texts[1]} oldLabel={`v${from}`} newLabel={`v${to}`} />}
    </>
  );
}

function Settings({ script, onSaved }: { script: Script; onSaved: () => void }) {
  const { permissions } = useSession();
  const { message } = App.useApp();
  const [error, setError] = useState("");
  const schedule = script.schedules[0];
  const save = async (v: Record<string, unknown>) => {
    try {
      await api("PATCH", path(script.name), {
        description: v.description, tags: v.tags, timeout_seconds: v.timeout_seconds ?? null, retries: v.retries,
        single_instance: v.single_instance, schedule: v.cron ? String(v.cron).trim() : null, timezone: v.timezone,
      });
      message.success("Settings saved");
      onSaved();
    } catch (e) {
      setError((e as Error).message);
    }
  };
  return (
    <Form layout="vertical" onFinish={save} disabled={!allowed(permissions, "script.add")} style={{ maxWidth: 620 }} initialValues={{
      description: script.description, tags: script.tags, timeout_seconds: script.timeout_seconds, retries: script.retries,
      single_instance: script.single_instance, cron: schedule?.cron, timezone: schedule?.timezone ?? "UTC",
    }}>
      <Problem error={error} />
      <Form.Item name="description" label="Description"><Input /></Form.Item>
      <Form.Item name="tags" label="Tags"><Select mode="tags" /></Form.Item>
      <ScheduleFields />
      <Space wrap>
        <Form.Item name="timeout_seconds" label="Timeout (seconds)"><InputNumber min={1} /></Form.Item>
        <Form.Item name="retries" label="Retries"><InputNumber min={0} max={100} /></Form.Item>
        <Form.Item name="single_instance" label="Single instance">
          <Select style={{ width: 160 }} options={["off", "queue", "reject"].map((v) => ({ value: v, label: v }))} />
        </Form.Item>
      </Space>
      {allowed(permissions, "script.add") && <Button type="primary" htmlType="submit">Save settings</Button>}
    </Form>
  );
}

export function ScriptPage() {
  const { name = "" } = useParams();
  const { permissions } = useSession();
  const { data: script, error, reload } = useLoad(() => get<Script>(path(name)), [name]);
  const runs = useLoad(() => get<RunRow[]>(`/api/v1/runs?script=${encodeURIComponent(name)}&limit=20`), [name]);
  if (!script) return <Problem error={error} />;
  const tabs = [
    ...(allowed(permissions, "run.start") ? [{ key: "run", label: "Run", children: <RunForm script={script} /> }] : []),
    { key: "versions", label: "Versions", children: <Versions script={script} onPushed={reload} /> },
    { key: "settings", label: "Settings", children: <Settings script={script} onSaved={reload} /> },
    { key: "runs", label: "Recent runs", children: (
      <Table size="small" rowKey="run_id" dataSource={runs.data ?? []} pagination={false} columns={[
        { title: "Run", dataIndex: "run_id", render: (id: string) => <Link to={`/runs/${id}`}>{id.slice(0, 8)}</Link> },
        { title: "Host", dataIndex: "host" }, { title: "By", dataIndex: "requested_by" },
        { title: "Exit", dataIndex: "exit_code" }, { title: "Created", dataIndex: "created_at", render: when },
      ]} />
    ) },
  ];
  return (
    <>
      <Typography.Title level={3}>{script.name}</Typography.Title>
      <Descriptions size="small" column={{ xs: 1, md: 3 }} style={{ marginBottom: 16 }} items={[
        { key: "l", label: "Language", children: script.interpreter },
        { key: "h", label: "Host", children: script.targets || script.host },
        { key: "v", label: "Newest version", children: script.newest_version ?? "original file" },
        { key: "t", label: "Tags", children: script.tags.map((t) => <Tag key={t}>{t}</Tag>) },
        { key: "d", label: "Description", children: script.description || "—" },
      ]} />
      <Tabs items={tabs} />
    </>
  );
}
