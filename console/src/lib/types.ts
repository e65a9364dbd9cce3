/** The shapes the gateway's REST API answers with (sms_plugin/gateway/api.py). */
import type { ParameterSpec } from "./params";

export interface Me {
  username: string;
  roles: string[];
  csrf_token?: string;
}

export interface Script {
  name: string;
  description: string;
  interpreter: string;
  host: string;
  targets?: string | null;
  parameters: ParameterSpec[];
  timeout_seconds: number | null;
  retries: number;
  single_instance: string;
  schedules: { cron?: string; interval_seconds?: number; timezone: string }[];
  tags: string[];
  enabled: boolean;
  newest_version: number | null;
  updated_at: string;
}

export interface Version {
  number: number;
  sha256: string;
  author: string;
  created_at: string;
  comment: string;
  content?: string;
}

export interface RunRow {
  run_id: string;
  script: string;
  version: number | null;
  host: string;
  trigger: string;
  requested_by: string;
  exit_code: number | null;
  created_at: string;
  started_at: string | null;
  ended_at: string | null;
}

export interface HostResult {
  host: string;
  state: string;
  exit_code: number | null;
  seconds: number | null;
  message: string;
}

export interface RunDetail {
  run_id: string;
  script: string;
  host: string;
  state: string;
  message: string;
  exit_code: number | null;
  output_tail: string[];
  hosts?: HostResult[];
}

export interface Host {
  name: string;
  kind: string;
  where: string;
  pinned_keys: number;
  legacy: boolean;
  labels: string[];
  admins_only: boolean;
}

export interface Rule {
  id: number;
  subject_kind: string;
  subject: string;
  actions: string[];
  script_glob: string | null;
  script_tag: string | null;
  host_glob: string | null;
  host_label: string | null;
  description: string;
}

/** One action of `GET /api/v1/access/preview`: allowed somewhere, and on which scripts and hosts. */
export interface ActionPreview {
  action: string;
  allowed: boolean;
  reason: string;
  scripts: string[];
  hosts: string[];
}

export interface AccessPreview {
  username: string;
  roles: string[];
  groups: string[];
  actions: ActionPreview[];
}

export interface Webhook {
  id: string;
  path: string;
  script: string;
  description: string;
  enabled: boolean;
  max_per_minute: number;
  created_by: string;
  secret?: string;
}

export interface Delivery {
  delivery_id: string;
  received_at: string;
  client: string;
  outcome: string;
  detail: string;
  run_id: string | null;
}

export interface AuditEvent {
  id: number;
  at: string;
  actor: string;
  action: string;
  object_type: string;
  object_name: string;
  outcome: string;
  detail: Record<string, unknown>;
}
