/** Syntax highlighting for each interpreter the catalog knows, all bundled (nothing loaded at run time). */
import { StreamLanguage, type StreamParser } from "@codemirror/language";
import { python } from "@codemirror/lang-python";
import { shell } from "@codemirror/legacy-modes/mode/shell";
import { powerShell } from "@codemirror/legacy-modes/mode/powershell";
import type { Extension } from "@codemirror/state";

/** Batch files (.bat/.cmd): REM and :: comments, :labels, %variables%, keywords. */
export const batch: StreamParser<unknown> = {
  name: "batch",
  token(stream) {
    if (stream.sol() && stream.match(/^\s*(rem\b|::).*/i)) return "comment";
    if (stream.sol() && stream.match(/^\s*:[\w.-]+/)) return "labelName";
    if (stream.match(/%~?[\w]*%?|!\w+!/)) return "variableName";
    if (stream.match(/"(?:[^"]*)"?/)) return "string";
    if (stream.match(/\b(echo|set|if|else|goto|call|exit|for|in|do|not|exist|errorlevel|setlocal|endlocal|shift|pause)\b/i)) return "keyword";
    stream.next();
    return null;
  },
};

export const INTERPRETERS = ["bash", "sh", "ksh", "python", "powershell", "cmd"] as const;

export function languageOf(interpreter: string): Extension[] {
  switch (interpreter) {
    case "bash":
    case "sh":
    case "ksh":
      return [StreamLanguage.define(shell)];
    case "powershell":
      return [StreamLanguage.define(powerShell)];
    case "cmd":
      return [StreamLanguage.define(batch)];
    case "python":
      return [python()];
    default:
      return [];
  }
}

/** The interpreter a file name suggests (for uploads). */
export function interpreterOfFile(name: string): string | undefined {
  const ext = name.toLowerCase().split(".").pop();
  return ({ sh: "sh", bash: "bash", ksh: "ksh", py: "python", ps1: "powershell", bat: "cmd", cmd: "cmd" } as Record<string, string>)[ext ?? ""];
}
