/** Full-text search over run output (Elasticsearch, `GET /api/v1/logs/search`). */
import { useState } from "react";
import { Link } from "react-router-dom";
import { Button, DatePicker, Form, Input, Table, Typography } from "antd";
import type { Dayjs } from "dayjs";
import { searchLogs, type LogHit, type LogSearch } from "../lib/monitor";
import { Problem, when } from "./common";

export function Logs() {
  const [hits, setHits] = useState<LogHit[]>([]);
  const [total, setTotal] = useState<number | null>(null);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const search = async (values: { q?: string; script?: string; host?: string; range?: [Dayjs, Dayjs] }) => {
    const request: LogSearch = { q: values.q, script: values.script, host: values.host, limit: 200,
      since: values.range?.[0]?.toISOString(), until: values.range?.[1]?.toISOString() };
    setBusy(true);
    try {
      const answer = await searchLogs(request);
      setHits(answer.hits);
      setTotal(answer.total);
      setError("");
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <Typography.Title level={3}>Logs</Typography.Title>
      <Form layout="inline" onFinish={search} style={{ marginBottom: 16, rowGap: 8 }}>
        <Form.Item name="q" label="Text"><Input placeholder="words in the output" allowClear /></Form.Item>
        <Form.Item name="script" label="Script"><Input allowClear /></Form.Item>
        <Form.Item name="host" label="Host"><Input allowClear /></Form.Item>
        <Form.Item name="range" label="Time"><DatePicker.RangePicker showTime /></Form.Item>
        <Button type="primary" htmlType="submit" loading={busy}>Search</Button>
      </Form>
      <Problem error={error} />
      {total !== null && <div style={{ marginBottom: 8 }}>{`${total} matching lines`}</div>}
      <Table size="small" rowKey={(h) => `${h.run}-${h.at}-${h.line}`} dataSource={hits} columns={[
        { title: "Time", dataIndex: "at", render: when, width: 190 },
        { title: "Script", dataIndex: "script" },
        { title: "Host", dataIndex: "host" },
        { title: "Run", dataIndex: "run", render: (r: string) => <Link to={`/runs/${r}`}>{r.slice(0, 8)}</Link> },
        { title: "Line", dataIndex: "line", render: (l: string, h) => <code style={{ color: h.stream === "stderr" ? "#cf1322" : undefined }}>{l}</code> },
      ]} />
    </>
  );
}
