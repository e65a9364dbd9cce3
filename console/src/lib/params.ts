/** A script's declared parameters as a form: initial values, and the values to send to start a run. */

export type ParameterType = "string" | "integer" | "number" | "boolean";
export type Value = string | number | boolean;

export interface ParameterSpec {
  name: string;
  type?: ParameterType;
  required?: boolean;
  default?: Value | null;
  choices?: Value[] | null;
  pattern?: string | null;
  secret?: boolean;
  description?: string;
}

export function initialValues(parameters: ParameterSpec[]): Record<string, Value | undefined> {
  return Object.fromEntries(parameters.map((p) => [p.name, p.default ?? (p.type === "boolean" ? false : undefined)]));
}

/** The ``parameters`` of a start request: typed values, empty optional fields left out; or the
 * first problem, named. */
export function runParameters(
  parameters: ParameterSpec[],
  values: Record<string, unknown>,
): { ok: true; parameters: Record<string, Value> } | { ok: false; error: string } {
  const out: Record<string, Value> = {};
  for (const p of parameters) {
    const raw = values[p.name];
    const empty = raw === undefined || raw === null || raw === "";
    if (empty) {
      if (p.required && (p.default === undefined || p.default === null)) return { ok: false, error: `${p.name} is required` };
      continue;
    }
    const type = p.type ?? "string";
    if (type === "boolean") {
      out[p.name] = raw === true || raw === "true";
    } else if (type === "integer") {
      const text = String(raw).trim();
      if (!/^-?\d+$/.test(text)) return { ok: false, error: `${p.name} must be a whole number` };
      out[p.name] = Number(text);
    } else if (type === "number") {
      const number = Number(String(raw).trim());
      if (!Number.isFinite(number)) return { ok: false, error: `${p.name} must be a number` };
      out[p.name] = number;
    } else {
      const text = String(raw);
      if (p.pattern && !new RegExp(`^(?:${p.pattern})$`).test(text)) {
        return { ok: false, error: `${p.name} must match ${p.pattern}` };
      }
      out[p.name] = text;
    }
  }
  return { ok: true, parameters: out };
}
