/** Scripts: search and tags; add a script with the editor or a file upload. */
import { useMemo, useState } from "react";
import { Link, useNavigate } from "react-router-dom";
import { App, Button, Drawer, Form, Input, InputNumber, Select, Space, Table, Tag, Typography, Upload } from "antd";
import { api, get } from "../lib/api";
import { INTERPRETERS, interpreterOfFile } from "../lib/languages";
import { allowed } from "../lib/permissions";
import type { Host, Script } from "../lib/types";
import { useLoad } from "../lib/useLoad";
import { useSession } from "../session";
import { CodeEditor } from "./CodeEditor";
import { Problem } from "./common";
import { ScheduleFields } from "./ScheduleFields";

interface AddForm {
  name: string; interpreter: string; host: string; description?: string; tags?: string[]; content: string;
  comment?: string; cron?: string; timezone: string; timeout_seconds?: number; retries?: number; single_instance: string;
}

function AddScript({ open, onClose, onAdded }: { open: boolean; onClose: () => void; onAdded: (name: string) => void }) {
  const [form] = Form.useForm<AddForm>();
  const interpreter = Form.useWatch("interpreter", form) ?? "bash";
  const hosts = useLoad(() => (open ? get<Host[]>("/api/v1/hosts") : Promise.resolve([])), [open]);
  const [error, setError] = useState("");
  const submit = async (v: AddForm) => {
    try {
      await api("POST", "/api/v1/scripts", {
        name: v.name, interpreter: v.interpreter, host: v.host, description: v.description ?? "", tags: v.tags ?? [],
        content: v.content, comment: v.comment ?? "", timeout_seconds: v.timeout_seconds ?? null, retries: v.retries ?? 0,
        single_instance: v.single_instance, schedules: v.cron ? [{ cron: v.cron.trim(), timezone: v.timezone }] : [],
      });
      form.resetFields();
      onAdded(v.name);
    } catch (e) {
      setError((e as Error).message);
    }
  };
  return (
    <Drawer title="Add a script" width={760} open={open} onClose={onClose} destroyOnClose>
      <Problem error={error} />
      <Form form={form} layout="vertical" onFinish={submit} initialValues={{ interpreter: "bash", single_instance: "off" }}>
        <Space wrap>
          <Form.Item name="name" label="Name" rules={[{ required: true, pattern: /^[a-z0-9][a-z0-9._-]{0,99}$/, message: "lowercase letters, digits, '.', '_' or '-'" }]}>
            <Input style={{ width: 220 }} />
          </Form.Item>
          <Form.Item name="interpreter" label="Language" rules={[{ required: true }]}>
            <Select style={{ width: 160 }} options={INTERPRETERS.map((i) => ({ value: i, label: i === "cmd" ? "batch (.bat/.cmd)" : i }))} />
          </Form.Item>
          <Form.Item name="host" label="Host" rules={[{ required: true }]}>
            <Select style={{ width: 200 }} showSearch options={(hosts.data ?? []).map((h) => ({ value: h.name, label: `${h.name} (${h.kind})` }))} />
          </Form.Item>
        </Space>
        <Form.Item name="description" label="Description"><Input /></Form.Item>
        <Form.Item name="tags" label="Tags"><Select mode="tags" tokenSeparators={[",", " "]} /></Form.Item>
        <Form.Item label="Script file">
          <Upload
            accept=".sh,.bash,.ksh,.py,.ps1,.bat,.cmd,.txt"
            showUploadList={false}
            beforeUpload={async (file) => {
              form.setFieldsValue({ content: await file.text(), interpreter: interpreterOfFile(file.name) ?? interpreter });
              return false;
            }}
          >
            <Button>Load from a file…</Button>
          </Upload>
        </Form.Item>
        <Form.Item name="content" label="Content" rules={[{ required: true, message: "write or load the script" }]}>
          <CodeEditor interpreter={interpreter} label="Script content" />
        </Form.Item>
        <Form.Item name="comment" label="Version comment"><Input /></Form.Item>
        <ScheduleFields />
        <Space wrap>
          <Form.Item name="timeout_seconds" label="Timeout (seconds)"><InputNumber min={1} /></Form.Item>
          <Form.Item name="retries" label="Retries"><InputNumber min={0} max={100} /></Form.Item>
          <Form.Item name="single_instance" label="Single instance">
            <Select style={{ width: 180 }} options={[{ value: "off", label: "off" }, { value: "queue", label: "queue" }, { value: "reject", label: "reject" }]} />
          </Form.Item>
        </Space>
        <Button type="primary" htmlType="submit">Add script</Button>
      </Form>
    </Drawer>
  );
}

export function Scripts() {
  const { permissions } = useSession();
  const navigate = useNavigate();
  const { message } = App.useApp();
  const { data, error, reload } = useLoad(() => get<Script[]>("/api/v1/scripts"), []);
  const [search, setSearch] = useState("");
  const [tags, setTags] = useState<string[]>([]);
  const [adding, setAdding] = useState(false);
  const allTags = useMemo(() => [...new Set((data ?? []).flatMap((s) => s.tags))].sort(), [data]);
  const shown = (data ?? []).filter(
    (s) => (s.name + " " + s.description).toLowerCase().includes(search.toLowerCase()) && tags.every((t) => s.tags.includes(t)),
  );
  return (
    <>
      <Typography.Title level={3}>Scripts</Typography.Title>
      <Space style={{ marginBottom: 16 }} wrap>
        <Input.Search aria-label="Search scripts" placeholder="Search name or description" allowClear onChange={(e) => setSearch(e.target.value)} style={{ width: 280 }} />
        <Select aria-label="Filter by tags" mode="multiple" placeholder="Tags" value={tags} onChange={setTags} options={allTags.map((t) => ({ value: t, label: t }))} style={{ minWidth: 200 }} />
        {allowed(permissions, "script.add") && <Button type="primary" onClick={() => setAdding(true)}>Add script</Button>}
      </Space>
      <Problem error={error} />
      <Table rowKey="name" dataSource={shown} columns={[
        { title: "Name", dataIndex: "name", render: (n: string) => <Link to={`/scripts/${encodeURIComponent(n)}`}>{n}</Link> },
        { title: "Language", dataIndex: "interpreter" },
        { title: "Host", render: (_, s: Script) => s.targets || s.host },
        { title: "Version", dataIndex: "newest_version" },
        { title: "Schedule", render: (_, s: Script) => s.schedules.map((x) => x.cron ?? `every ${x.interval_seconds}s`).join(", ") },
        { title: "Tags", dataIndex: "tags", render: (t: string[]) => t.map((x) => <Tag key={x}>{x}</Tag>) },
        { title: "Description", dataIndex: "description" },
      ]} />
      <AddScript open={adding} onClose={() => setAdding(false)} onAdded={(name) => {
        setAdding(false);
        message.success(`Script ${name} added`);
        reload();
        navigate(`/scripts/${encodeURIComponent(name)}`);
      }} />
    </>
  );
}
