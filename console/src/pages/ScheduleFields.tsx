/** Cron and time zone fields with the schedule read back in words. */
import { Form, Input, Select } from "antd";
import { readCron } from "../lib/cron";

const ZONES: string[] = (Intl as unknown as { supportedValuesOf?: (k: string) => string[] }).supportedValuesOf?.("timeZone") ?? ["UTC"];

export function ScheduleFields() {
  const cron: string | undefined = Form.useWatch("cron");
  const reading = cron ? readCron(cron) : null;
  return (
    <>
      <Form.Item
        name="cron"
        label="Schedule (cron)"
        help={reading ? (reading.ok ? reading.text : reading.error) : "optional, e.g. 0 2 * * 1-5"}
        validateStatus={reading && !reading.ok ? "error" : undefined}
        rules={[{ validator: async (_, v) => { const r = v ? readCron(v) : null; if (r && !r.ok) throw new Error(r.error); } }]}
      >
        <Input placeholder="minute hour day month weekday" />
      </Form.Item>
      <Form.Item name="timezone" label="Time zone" initialValue="UTC">
        <Select showSearch options={["UTC", ...ZONES.filter((z) => z !== "UTC")].map((z) => ({ value: z, label: z }))} />
      </Form.Item>
    </>
  );
}
