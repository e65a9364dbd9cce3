/**
 * What the caller may do, to hide the controls they may not use (the gateway enforces every
 * request regardless). The one place that knows where permissions come from: the console asks
 * `GET /api/v1/me/permissions`; a gateway without it answers 404 and the permissions are derived
 * from the roles of `/auth/me` with the gateway's role table (sms_plugin/gateway/rbac.py).
 */
import { ApiError, get } from "./api";

export type Capability =
  | "script.add" | "run.start" | "run.stop" | "host.add" | "access.manage" | "webhook.manage" | "audit.read";

export interface Permissions {
  roles: string[];
  can: Partial<Record<Capability, boolean>>;
}

const ROLE_ACTIONS: Record<string, string[]> = {
  "sms-viewer": ["read"],
  "sms-operator": ["read", "start", "stop"],
  "sms-author": ["read", "author"],
  "sms-admin": ["read", "start", "stop", "author", "admin"],
};

const CAPABILITY_ACTION: Record<Capability, string> = {
  "script.add": "author",
  "run.start": "start",
  "run.stop": "stop",
  "host.add": "admin",
  "access.manage": "admin",
  "webhook.manage": "admin",
  "audit.read": "admin",
};

/** Permissions from roles alone (before access rules narrow them per script or host). */
export function fromRoles(roles: string[]): Permissions {
  const actions = new Set(roles.flatMap((role) => ROLE_ACTIONS[role] ?? []));
  const can = Object.fromEntries(
    (Object.keys(CAPABILITY_ACTION) as Capability[]).map((cap) => [cap, actions.has(CAPABILITY_ACTION[cap])]),
  ) as Permissions["can"];
  return { roles, can };
}

/** True only when the permissions grant ``capability`` (unknown means no). */
export function allowed(permissions: Permissions | null, capability: Capability): boolean {
  return Boolean(permissions?.can[capability]);
}

export async function loadPermissions(roles: string[]): Promise<Permissions> {
  try {
    return await get<Permissions>("/api/v1/me/permissions");
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return fromRoles(roles);
    throw error;
  }
}
