/** The gateway's REST API, called with the session cookie; errors carry the gateway's reason. */

export class ApiError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

function reason(status: number, body: unknown): string {
  const detail = (body as { detail?: unknown } | null)?.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d: { loc?: unknown[]; msg?: string }) => `${(d.loc ?? []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }
  return `HTTP ${status}`;
}

let csrfToken = "";

/** Keeps the session's CSRF token (from `/auth/me`) for every later state change: a POST without a
 *  JSON body (stop a run, rotate a webhook secret) is one a foreign form could send, so the gateway
 *  refuses it without the token (docs/gateway.md). */
export function rememberCsrfToken(token: string | undefined): void {
  csrfToken = token ?? "";
}

/** The headers of a request: JSON when there is a body, the CSRF token with every state change. */
export function requestHeaders(method: string, hasBody: boolean): Record<string, string> {
  return {
    Accept: "application/json",
    ...(hasBody ? { "Content-Type": "application/json" } : {}),
    ...(method !== "GET" && method !== "HEAD" && csrfToken ? { "X-CSRF-Token": csrfToken } : {}),
  };
}

/** JSON in, JSON out, with the session cookie. */
export async function api<T>(method: string, path: string, body?: unknown, init?: RequestInit): Promise<T> {
  const reply = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: requestHeaders(method, body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    ...init,
  });
  if (reply.status === 204) return undefined as T;
  const text = await reply.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!reply.ok) throw new ApiError(reply.status, reason(reply.status, parsed));
  return parsed as T;
}

export const get = <T,>(path: string) => api<T>("GET", path);

/** A query string of the given values, leaving out empty ones. */
export function query(values: Record<string, string | number | undefined | null>): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}
