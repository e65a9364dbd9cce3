/** A cron expression in words, or why it is not one the catalog accepts (5 fields). */
import cronstrue from "cronstrue";

export type CronReading = { ok: true; text: string } | { ok: false; error: string };

export function readCron(expression: string): CronReading {
  const fields = expression.trim().split(/\s+/).filter(Boolean);
  if (fields.length !== 5) {
    return { ok: false, error: "a cron expression has 5 fields: minute hour day-of-month month day-of-week" };
  }
  try {
    return { ok: true, text: cronstrue.toString(fields.join(" "), { use24HourTimeFormat: true, verbose: true }) };
  } catch (error) {
    return { ok: false, error: String(error).replace(/^Error: /, "") };
  }
}
