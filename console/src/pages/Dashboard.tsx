/** Runs by state over time, per-script success and duration, failing scripts, runs in progress,
 * host health and recent audit events, from `GET /api/v1/monitor/overview` (CONTRACTS.md). */
import { useState } from "react";
import { Link } from "react-router-dom";
import { Card, Col, List, Row, Segmented, Statistic, Table, Tag, Tooltip, Typography } from "antd";
import { overview, stateSeries, type Window } from "../lib/monitor";
import { useLoad } from "../lib/useLoad";
import { Problem, when } from "./common";

const STATE_FILL: Record<string, string> = { COMPLETED: "#52c41a", FAILED: "#f5222d", CRASHED: "#a8071a", CANCELLED: "#bfbfbf", RUNNING: "#1677ff" };

export function Dashboard() {
  const [window, setWindow] = useState<Window>("24h");
  const { data, error } = useLoad(() => overview(window), [window]);
  const series = data ? stateSeries(data.runs_by_state) : [];
  const peak = Math.max(1, ...series.map((s) => s.total));
  const failing = data?.scripts.filter((s) => s.failing_now) ?? [];
  const unhealthy = data?.hosts.filter((h) => !h.healthy) ?? [];
  return (
    <>
      <Typography.Title level={3}>Dashboard</Typography.Title>
      <Segmented aria-label="Time window" options={["1h", "6h", "24h", "7d"]} value={window} onChange={(v) => setWindow(v as Window)} style={{ marginBottom: 16 }} />
      <Problem error={error} />
      <Row gutter={[16, 16]}>
        <Col xs={12} lg={6}><Card><Link to="/runs"><Statistic title="Runs in progress" value={data?.in_progress ?? "—"} /></Link></Card></Col>
        <Col xs={12} lg={6}><Card><Link to="/scripts"><Statistic title="Scripts failing now" value={data ? failing.length : "—"} valueStyle={{ color: failing.length ? "#cf1322" : undefined }} /></Link></Card></Col>
        <Col xs={12} lg={6}><Card><Link to="/hosts"><Statistic title="Hosts healthy" value={data ? `${data.hosts.length - unhealthy.length} / ${data.hosts.length}` : "—"} /></Link></Card></Col>
        <Col xs={12} lg={6}><Card><Statistic title="Updated" value={data ? new Date(data.generated_at).toLocaleTimeString() : "—"} /></Card></Col>
        <Col xs={24} lg={14}>
          <Card title="Runs by state">
            <div role="img" aria-label="Runs by state over time" style={{ display: "flex", alignItems: "flex-end", height: 160, gap: 2 }}>
              {series.map((s) => (
                <Tooltip key={s.t} title={`${when(s.t)}: ${Object.entries(s.counts).map(([k, v]) => `${k} ${v}`).join(", ")}`}>
                  <div style={{ flex: 1, display: "flex", flexDirection: "column-reverse", height: `${(100 * s.total) / peak}%` }}>
                    {Object.entries(s.counts).map(([state, count]) => (
                      <div key={state} style={{ flex: count, background: STATE_FILL[state] ?? "#faad14" }} />
                    ))}
                  </div>
                </Tooltip>
              ))}
            </div>
            <div style={{ marginTop: 8 }}>{Object.entries(STATE_FILL).map(([s, c]) => <Tag key={s} color={c}>{s}</Tag>)}</div>
          </Card>
        </Col>
        <Col xs={24} lg={10}>
          <Card title="Recent audit events" extra={<Link to="/access?tab=audit">All</Link>}>
            <List size="small" dataSource={data?.recent_audit ?? []} renderItem={(e) => (
              <List.Item>{when(e.at)} · <b>{e.actor}</b> {e.action} {e.target}</List.Item>
            )} />
          </Card>
        </Col>
        <Col xs={24} lg={14}>
          <Card title="Scripts">
            <Table size="small" rowKey="script" pagination={false} dataSource={data?.scripts ?? []} columns={[
              { title: "Script", dataIndex: "script", render: (s: string) => <Link to={`/scripts/${encodeURIComponent(s)}`}>{s}</Link> },
              { title: "Runs", dataIndex: "runs" },
              { title: "Success", dataIndex: "success_rate", render: (r: number) => `${Math.round(r * 100)}%` },
              { title: "p50 s", dataIndex: "p50_seconds", render: (v: number) => v?.toFixed(1) },
              { title: "p95 s", dataIndex: "p95_seconds", render: (v: number) => v?.toFixed(1) },
              { title: "Now", dataIndex: "failing_now", render: (f: boolean) => (f ? <Tag color="red">failing</Tag> : <Tag color="green">ok</Tag>) },
            ]} />
          </Card>
        </Col>
        <Col xs={24} lg={10}>
          <Card title="Host health" extra={<Link to="/hosts">Hosts</Link>}>
            <List size="small" dataSource={data?.hosts ?? []} renderItem={(h) => (
              <List.Item>{h.host} <Tag color={h.healthy ? "green" : "red"}>{h.healthy ? "healthy" : "unhealthy"}</Tag> <span>{when(h.checked_at)}</span></List.Item>
            )} />
          </Card>
        </Col>
      </Row>
    </>
  );
}
