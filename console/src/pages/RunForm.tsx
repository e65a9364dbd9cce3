/** Start a script: a field per declared parameter (or free arguments), optionally another host. */
import { useState } from "react";
import { useNavigate } from "react-router-dom";
import { Button, Form, Input, InputNumber, Select, Switch } from "antd";
import { api } from "../lib/api";
import { initialValues, runParameters, type ParameterSpec } from "../lib/params";
import type { Script } from "../lib/types";
import { Problem } from "./common";

function ParameterField({ p }: { p: ParameterSpec }) {
  const label = `${p.name}${p.required ? " *" : ""}`;
  const common = { name: p.name, label, help: p.description || undefined, key: p.name };
  if (p.choices?.length) return <Form.Item {...common}><Select allowClear options={p.choices.map((c) => ({ value: c, label: String(c) }))} /></Form.Item>;
  if (p.type === "boolean") return <Form.Item {...common} valuePropName="checked"><Switch /></Form.Item>;
  if (p.type === "integer" || p.type === "number") return <Form.Item {...common}><InputNumber style={{ width: 200 }} step={p.type === "integer" ? 1 : 0.1} /></Form.Item>;
  if (p.secret) return <Form.Item {...common}><Input.Password autoComplete="off" /></Form.Item>;
  return <Form.Item {...common}><Input /></Form.Item>;
}

export function RunForm({ script }: { script: Script }) {
  const navigate = useNavigate();
  const [error, setError] = useState("");
  const declared = script.parameters ?? [];
  const submit = async (values: Record<string, unknown>) => {
    const body: Record<string, unknown> = {};
    if (declared.length) {
      const checked = runParameters(declared, values);
      if (!checked.ok) return setError(checked.error);
      body.parameters = checked.parameters;
    } else if (typeof values.args === "string" && values.args.trim()) {
      body.args = values.args.split("\n").filter((a) => a !== "");
    }
    if (values.host) body.host = values.host;
    try {
      const { run_id } = await api<{ run_id: string }>("POST", `/api/v1/scripts/${encodeURIComponent(script.name)}/runs`, body);
      navigate(`/runs/${run_id}`);
    } catch (e) {
      setError((e as Error).message);
    }
  };
  return (
    <Form layout="vertical" onFinish={submit} initialValues={initialValues(declared)} style={{ maxWidth: 560 }}>
      <Problem error={error} />
      {declared.map((p) => <ParameterField key={p.name} p={p} />)}
      {!declared.length && (
        <Form.Item name="args" label="Arguments (one per line)" help="Leave empty for the script's default arguments">
          <Input.TextArea rows={3} />
        </Form.Item>
      )}
      <Form.Item name="host" label="Host (optional)" help={`default: ${script.targets || script.host}`}><Input /></Form.Item>
      <Button type="primary" htmlType="submit">Run</Button>
    </Form>
  );
}
