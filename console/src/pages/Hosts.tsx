/** Hosts: list with a search, add SSH and Windows hosts, run the host check, trust a host key, labels. */
import { useState } from "react";
import { App, Button, Drawer, Form, Input, InputNumber, Radio, Select, Space, Switch, Table, Tag, Typography } from "antd";
import { api, get } from "../lib/api";
import { allowed } from "../lib/permissions";
import type { Host } from "../lib/types";
import { useLoad } from "../lib/useLoad";
import { useSession } from "../session";
import { Problem } from "./common";

const hostPath = (name: string) => `/api/v1/hosts/${encodeURIComponent(name)}`;

/** Whether ``host`` matches the search ``text``: in its name, address or labels, ignoring case. */
export function hostMatches(host: Host, text: string): boolean {
  return [host.name, host.where, ...host.labels].join(" ").toLowerCase().includes(text.trim().toLowerCase());
}

function AddHost({ open, onClose, onAdded }: { open: boolean; onClose: () => void; onAdded: () => void }) {
  const [form] = Form.useForm();
  const kind: string = Form.useWatch("kind", form) ?? "ssh";
  const [error, setError] = useState("");
  const submit = async (v: Record<string, unknown>) => {
    const body = Object.fromEntries(Object.entries(v).filter(([, value]) => value !== undefined && value !== ""));
    try {
      await api("POST", "/api/v1/hosts", body);
      form.resetFields();
      onAdded();
    } catch (e) {
      setError((e as Error).message);
    }
  };
  return (
    <Drawer title="Add a host" width={560} open={open} onClose={onClose}>
      <Problem error={error} />
      <Form form={form} layout="vertical" onFinish={submit} initialValues={{ kind: "ssh", labels: [] }}>
        <Form.Item name="kind" label="Kind"><Radio.Group options={[{ value: "ssh", label: "Linux/Unix (SSH)" }, { value: "windows", label: "Windows (WinRM)" }]} /></Form.Item>
        <Form.Item name="name" label="Name" rules={[{ required: true }]}><Input /></Form.Item>
        <Form.Item name="address" label="Address" rules={[{ required: true }]}><Input placeholder="host name or IP" /></Form.Item>
        <Form.Item name="port" label="Port"><InputNumber min={1} max={65535} placeholder={kind === "ssh" ? "22" : "5985 / 5986"} /></Form.Item>
        <Form.Item name="username" label="Account" rules={[{ required: true }]}><Input /></Form.Item>
        {kind === "ssh" ? (
          <>
            <Form.Item name="private_key" label="Private key"><Input.TextArea rows={4} placeholder="-----BEGIN OPENSSH PRIVATE KEY-----" /></Form.Item>
            <Form.Item name="password" label="Password (optional)"><Input.Password autoComplete="new-password" /></Form.Item>
            <Form.Item name="legacy" label="Legacy algorithms (old servers only)" valuePropName="checked"><Switch /></Form.Item>
          </>
        ) : (
          <>
            <Form.Item name="password" label="Password" rules={[{ required: true }]}><Input.Password autoComplete="new-password" /></Form.Item>
            <Form.Item name="scheme" label="Scheme" initialValue="http"><Select options={[{ value: "http", label: "http (message encryption)" }, { value: "https", label: "https" }]} /></Form.Item>
            <Form.Item name="auth" label="Authentication" initialValue="negotiate"><Select options={["negotiate", "ntlm", "kerberos", "basic", "credssp"].map((a) => ({ value: a, label: a }))} /></Form.Item>
          </>
        )}
        <Form.Item name="labels" label="Labels"><Select mode="tags" placeholder="role=web, prod" /></Form.Item>
        <Button type="primary" htmlType="submit">Add host</Button>
      </Form>
    </Drawer>
  );
}

export function Hosts() {
  const { permissions } = useSession();
  const { modal, message } = App.useApp();
  const { data, error, reload } = useLoad(() => get<Host[]>("/api/v1/hosts"), []);
  const [adding, setAdding] = useState(false);
  const [problem, setProblem] = useState("");
  const [search, setSearch] = useState("");
  const admin = allowed(permissions, "host.add");
  const guarded = (work: () => Promise<void>) => () => work().catch((e: Error) => setProblem(e.message));
  const check = (name: string) => guarded(async () => {
    const result = await api<Record<string, unknown>>("POST", `${hostPath(name)}/check`);
    modal.info({ title: `Check of ${name}`, width: 640, content: <pre style={{ whiteSpace: "pre-wrap" }}>{JSON.stringify(result, null, 2)}</pre> });
  });
  const trust = (name: string) => guarded(async () => {
    const key = await get<{ fingerprint: string; key?: string }>(`${hostPath(name)}/host-key`);
    modal.confirm({
      title: `Trust the key ${name} presents?`,
      width: 560,  // the fingerprint on one line, inside the dialog
      content: <>Compare this fingerprint with the one the server's administrator gives you:<pre style={{ overflowWrap: "anywhere", whiteSpace: "pre-wrap" }}>{key.fingerprint}</pre></>,
      okText: "Trust this key",
      onOk: guarded(async () => {
        await api("POST", `${hostPath(name)}/trust`, { fingerprint: key.fingerprint });
        message.success(`Key of ${name} pinned`);
        reload();
      }),
    });
  });
  const editLabels = (host: Host) => {
    let labels = host.labels;
    modal.confirm({
      title: `Labels of ${host.name}`,
      content: <Select mode="tags" defaultValue={host.labels} style={{ width: "100%" }} onChange={(v) => { labels = v; }} aria-label="Labels" />,
      okText: "Save",
      onOk: guarded(async () => {
        await api("PUT", `${hostPath(host.name)}/labels`, { labels });
        reload();
      }),
    });
  };
  return (
    <>
      <Typography.Title level={3}>Hosts</Typography.Title>
      <Space style={{ marginBottom: 16 }} wrap>
        <Input.Search aria-label="Search hosts" placeholder="Search name, address or label" allowClear onChange={(e) => setSearch(e.target.value)} style={{ width: 280 }} />
        {admin && <Button type="primary" onClick={() => setAdding(true)}>Add host</Button>}
      </Space>
      <Problem error={error || problem} />
      <Table rowKey="name" dataSource={(data ?? []).filter((h) => hostMatches(h, search))} columns={[
        { title: "Name", dataIndex: "name" }, { title: "Kind", dataIndex: "kind" }, { title: "Where", dataIndex: "where" },
        { title: "Host key", dataIndex: "pinned_keys", render: (n: number, h: Host) => (h.kind === "ssh" ? (n ? <Tag color="green">pinned</Tag> : <Tag color="orange">not trusted</Tag>) : "—") },
        { title: "Labels", dataIndex: "labels", render: (l: string[]) => l.map((x) => <Tag key={x}>{x}</Tag>) },
        { title: "", render: (_, h: Host) => admin && (
          <Space>
            <Button size="small" onClick={check(h.name)}>Check</Button>
            {h.kind === "ssh" && <Button size="small" onClick={trust(h.name)}>Trust key…</Button>}
            <Button size="small" onClick={() => editLabels(h)}>Labels…</Button>
          </Space>
        ) },
      ]} />
      <AddHost open={adding} onClose={() => setAdding(false)} onAdded={() => { setAdding(false); reload(); }} />
    </>
  );
}
