/** Access rules (with a "what can this user do?" preview), webhooks (secret rotation, deliveries)
 * and the audit trail; admins only (the gateway refuses others). */
import { useState } from "react";
import { useSearchParams } from "react-router-dom";
import { App, Button, Drawer, Form, Input, InputNumber, Popconfirm, Select, Space, Table, Tabs, Tag, Typography } from "antd";
import { api, get, query } from "../lib/api";
import type { AccessPreview, ActionPreview, AuditEvent, Delivery, Rule, Webhook } from "../lib/types";
import { useLoad } from "../lib/useLoad";
import { Problem, when } from "./common";

const SMS_ROLES = ["sms-viewer", "sms-operator", "sms-author", "sms-admin"];

/** The preview's query: Keycloak keeps a user's roles and groups, so the admin gives them. */
export function previewQuery(user: string, roles: string[] = [], groups: string[] = []): string {
  const params = new URLSearchParams({ user });
  roles.forEach((role) => params.append("role", role));
  groups.forEach((group) => params.append("group", group));
  return `?${params.toString()}`;
}

const listed = (names: string[]) => (names.length ? names.join(", ") : "none");

/** "What can this user do?": per action, allowed or not (and why), and on which scripts and hosts. */
function Preview({ onProblem }: { onProblem: (message: string) => void }) {
  const [preview, setPreview] = useState<AccessPreview | null>(null);
  const ask = (v: { user: string; roles?: string[]; groups?: string[] }) =>
    get<AccessPreview>(`/api/v1/access/preview${previewQuery(v.user, v.roles, v.groups)}`).then(setPreview).catch((e: Error) => onProblem(e.message));
  return (
    <>
      <Typography.Title level={5} style={{ marginTop: 24 }}>What can this user do?</Typography.Title>
      <Typography.Paragraph type="secondary">Keycloak keeps a user's roles and groups: give them here.</Typography.Paragraph>
      <Form layout="inline" onFinish={ask} initialValues={{ roles: ["sms-operator"] }} style={{ rowGap: 8, marginBottom: 16 }}>
        <Form.Item name="user" rules={[{ required: true }]}><Input aria-label="User to preview" placeholder="user name" /></Form.Item>
        <Form.Item name="roles"><Select aria-label="Their roles" mode="multiple" style={{ minWidth: 200 }} options={SMS_ROLES.map((r) => ({ value: r, label: r }))} /></Form.Item>
        <Form.Item name="groups"><Select aria-label="Their groups" mode="tags" placeholder="groups" style={{ minWidth: 160 }} /></Form.Item>
        <Button htmlType="submit">Preview</Button>
      </Form>
      {preview && (
        <Table data-testid="access-preview" size="small" rowKey="action" pagination={false} dataSource={preview.actions} columns={[
          { title: "Action", dataIndex: "action" },
          { title: "Allowed", render: (_, a: ActionPreview) => <Tag color={a.allowed ? "green" : "default"} title={a.reason}>{a.allowed ? "yes" : "no"}</Tag> },
          { title: "Scripts", dataIndex: "scripts", render: listed },
          { title: "Hosts", dataIndex: "hosts", render: listed },
        ]} />
      )}
    </>
  );
}

function Rules() {
  const { data, error, reload } = useLoad(() => get<Rule[]>("/api/v1/access-rules"), []);
  const [problem, setProblem] = useState("");
  const add = async (v: Record<string, unknown>) => {
    try {
      await api("POST", "/api/v1/access-rules", Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined && x !== "")));
      reload();
    } catch (e) {
      setProblem((e as Error).message);
    }
  };
  const remove = (id: number) => api("DELETE", `/api/v1/access-rules/${id}`).then(reload).catch((e: Error) => setProblem(e.message));
  return (
    <>
      <Problem error={error || problem} />
      <Typography.Paragraph>A rule narrows what a user or group may do to the scripts and hosts matching every condition given. Admins are never narrowed.</Typography.Paragraph>
      <Form layout="inline" onFinish={add} initialValues={{ subject_kind: "user", actions: ["read"] }} style={{ rowGap: 8, marginBottom: 16 }}>
        <Form.Item name="subject_kind"><Select aria-label="Subject kind" style={{ width: 100 }} options={["user", "group", "role"].map((k) => ({ value: k, label: k }))} /></Form.Item>
        <Form.Item name="subject" rules={[{ required: true }]}><Input aria-label="Subject" placeholder="name" /></Form.Item>
        <Form.Item name="actions"><Select aria-label="Actions" mode="multiple" style={{ minWidth: 180 }} options={["read", "start", "stop", "author"].map((a) => ({ value: a, label: a }))} /></Form.Item>
        <Form.Item name="script_glob"><Input aria-label="Scripts (glob)" placeholder="scripts, e.g. web-*" /></Form.Item>
        <Form.Item name="script_tag"><Input aria-label="Script tag" placeholder="script tag" /></Form.Item>
        <Form.Item name="host_glob"><Input aria-label="Hosts (glob)" placeholder="hosts glob" /></Form.Item>
        <Form.Item name="host_label"><Input aria-label="Host label" placeholder="host label" /></Form.Item>
        <Button type="primary" htmlType="submit">Add rule</Button>
      </Form>
      <Table size="small" rowKey="id" dataSource={data ?? []} pagination={false} columns={[
        { title: "Who", render: (_, r: Rule) => `${r.subject_kind} ${r.subject}` },
        { title: "May", dataIndex: "actions", render: (a: string[]) => a.map((x) => <Tag key={x}>{x}</Tag>) },
        { title: "Scripts", render: (_, r: Rule) => [r.script_glob, r.script_tag && `tag ${r.script_tag}`].filter(Boolean).join(", ") || "any" },
        { title: "Hosts", render: (_, r: Rule) => [r.host_glob, r.host_label && `label ${r.host_label}`].filter(Boolean).join(", ") || "any" },
        { title: "", render: (_, r: Rule) => <Popconfirm title="Remove this rule?" onConfirm={() => remove(r.id)}><Button size="small" danger>Remove</Button></Popconfirm> },
      ]} />
      <Preview onProblem={setProblem} />
    </>
  );
}

function Webhooks() {
  const { modal } = App.useApp();
  const { data, error, reload } = useLoad(() => get<Webhook[]>("/api/v1/webhooks"), []);
  const [problem, setProblem] = useState("");
  const [deliveries, setDeliveries] = useState<{ hook: string; rows: Delivery[] } | null>(null);
  const showSecret = (hook: Webhook): void => void modal.info({
    title: `Signing secret of ${hook.id}`,
    content: <>Shown only now; store it where the sender keeps its secrets.<pre data-testid="webhook-secret">{hook.secret}</pre></>,
  });
  const add = (v: { script: string; description?: string; max_per_minute?: number }) =>
    api<Webhook>("POST", "/api/v1/webhooks", v).then((hook) => { showSecret(hook); reload(); }).catch((e: Error) => setProblem(e.message));
  const rotate = (id: string) =>
    api<Webhook>("POST", `/api/v1/webhooks/${id}/secret`).then(showSecret).catch((e: Error) => setProblem(e.message));
  const open = (id: string) =>
    get<Delivery[]>(`/api/v1/webhooks/${id}/deliveries`).then((rows) => setDeliveries({ hook: id, rows })).catch((e: Error) => setProblem(e.message));
  return (
    <>
      <Problem error={error || problem} />
      <Form layout="inline" onFinish={add} style={{ marginBottom: 16 }}>
        <Form.Item name="script" rules={[{ required: true }]}><Input aria-label="Script" placeholder="script" /></Form.Item>
        <Form.Item name="description"><Input aria-label="Description" placeholder="description" /></Form.Item>
        <Form.Item name="max_per_minute"><InputNumber aria-label="Deliveries per minute" placeholder="30/min" min={1} /></Form.Item>
        <Button type="primary" htmlType="submit">Add webhook</Button>
      </Form>
      <Table size="small" rowKey="id" dataSource={data ?? []} pagination={false} columns={[
        { title: "Path", dataIndex: "path", render: (p: string) => <code>{p}</code> }, { title: "Script", dataIndex: "script" },
        { title: "Enabled", dataIndex: "enabled", render: (e: boolean) => (e ? "yes" : "no") }, { title: "Per minute", dataIndex: "max_per_minute" },
        { title: "", render: (_, h: Webhook) => (
          <Space>
            <Popconfirm title="The old secret stops working at once. Rotate?" onConfirm={() => rotate(h.id)}><Button size="small">Rotate secret</Button></Popconfirm>
            <Button size="small" onClick={() => open(h.id)}>Deliveries</Button>
          </Space>
        ) },
      ]} />
      <Drawer title={`Deliveries of ${deliveries?.hook}`} width={760} open={deliveries !== null} onClose={() => setDeliveries(null)}>
        <Table size="small" rowKey="delivery_id" dataSource={deliveries?.rows ?? []} columns={[
          { title: "Received", dataIndex: "received_at", render: when }, { title: "From", dataIndex: "client" },
          { title: "Outcome", dataIndex: "outcome" }, { title: "Detail", dataIndex: "detail" }, { title: "Run", dataIndex: "run_id" },
        ]} />
      </Drawer>
    </>
  );
}

function Audit() {
  const [filter, setFilter] = useState<Record<string, string>>({});
  const { data, error } = useLoad(() => get<AuditEvent[]>(`/api/v1/audit-events${query({ ...filter, limit: 200 })}`), [JSON.stringify(filter)]);
  return (
    <>
      <Problem error={error} />
      <Form layout="inline" onFinish={(v) => setFilter(Object.fromEntries(Object.entries(v).filter(([, x]) => x)) as Record<string, string>)} style={{ marginBottom: 16 }}>
        <Form.Item name="actor"><Input aria-label="Actor" placeholder="actor" /></Form.Item>
        <Form.Item name="action"><Input aria-label="Action" placeholder="action, e.g. api.run.start" /></Form.Item>
        <Form.Item name="outcome"><Select aria-label="Outcome" allowClear placeholder="outcome" style={{ width: 120 }} options={["ok", "denied", "error"].map((o) => ({ value: o, label: o }))} /></Form.Item>
        <Button htmlType="submit">Filter</Button>
      </Form>
      <Table size="small" rowKey="id" dataSource={data ?? []} columns={[
        { title: "When", dataIndex: "at", render: when }, { title: "Who", dataIndex: "actor" }, { title: "Action", dataIndex: "action" },
        { title: "Object", render: (_, e: AuditEvent) => `${e.object_type} ${e.object_name}` },
        { title: "Outcome", dataIndex: "outcome", render: (o: string) => <Tag color={o === "ok" ? "green" : o === "denied" ? "orange" : "red"}>{o}</Tag> },
      ]} />
    </>
  );
}

export function Access() {
  const [params, setParams] = useSearchParams();
  return (
    <>
      <Typography.Title level={3}>Access</Typography.Title>
      <Tabs activeKey={params.get("tab") ?? "rules"} onChange={(tab) => setParams({ tab })} items={[
        { key: "rules", label: "Access rules", children: <Rules /> },
        { key: "webhooks", label: "Webhooks", children: <Webhooks /> },
        { key: "audit", label: "Audit trail", children: <Audit /> },
      ]} />
    </>
  );
}
