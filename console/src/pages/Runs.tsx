/** Runs the caller may read, newest first, with filters. */
import { useState } from "react";
import { Link } from "react-router-dom";
import { Input, Select, Space, Table, Typography } from "antd";
import { get, query } from "../lib/api";
import type { RunRow } from "../lib/types";
import { useLoad } from "../lib/useLoad";
import { Problem, when } from "./common";

export function Runs() {
  const [script, setScript] = useState("");
  const [limit, setLimit] = useState(100);
  const [text, setText] = useState("");
  const { data, error } = useLoad(() => get<RunRow[]>(`/api/v1/runs${query({ script, limit })}`), [script, limit]);
  const needle = text.toLowerCase();
  const shown = (data ?? []).filter((r) => [r.host, r.requested_by, r.trigger, r.run_id].some((v) => v.toLowerCase().includes(needle)));
  return (
    <>
      <Typography.Title level={3}>Runs</Typography.Title>
      <Space style={{ marginBottom: 16 }} wrap>
        <Input.Search aria-label="Script" placeholder="Script name" allowClear onSearch={setScript} style={{ width: 220 }} />
        <Input aria-label="Host, user, trigger or run id" placeholder="Host, user, trigger or run id" allowClear onChange={(e) => setText(e.target.value)} style={{ width: 280 }} />
        <Select aria-label="How many" value={limit} onChange={setLimit} options={[50, 100, 500].map((n) => ({ value: n, label: `newest ${n}` }))} />
      </Space>
      <Problem error={error} />
      <Table size="small" rowKey="run_id" dataSource={shown} columns={[
        { title: "Run", dataIndex: "run_id", render: (id: string) => <Link to={`/runs/${id}`}>{id.slice(0, 8)}</Link> },
        { title: "Script", dataIndex: "script", render: (s: string) => <Link to={`/scripts/${encodeURIComponent(s)}`}>{s}</Link> },
        { title: "Version", dataIndex: "version" }, { title: "Host", dataIndex: "host" },
        { title: "Trigger", dataIndex: "trigger" }, { title: "By", dataIndex: "requested_by" },
        { title: "Exit", dataIndex: "exit_code", render: (c: number | null) => c ?? "—" },
        { title: "Created", dataIndex: "created_at", render: when, sorter: (a, b) => a.created_at.localeCompare(b.created_at) },
        { title: "Ended", dataIndex: "ended_at", render: when },
      ]} />
    </>
  );
}
