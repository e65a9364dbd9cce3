import { describe, expect, it } from "vitest";
import { StringStream } from "@codemirror/language";
import { batch, INTERPRETERS, interpreterOfFile, languageOf } from "./languages";

describe("editor languages", () => {
  it("has highlighting for every interpreter", () => {
    for (const interpreter of INTERPRETERS) expect(languageOf(interpreter).length, interpreter).toBe(1);
    expect(languageOf("original")).toEqual([]);
  });
  it("guesses the interpreter from a file name", () => {
    expect(["a.ksh", "b.PS1", "c.bat", "d.cmd", "e.py", "f.txt"].map(interpreterOfFile)).toEqual(["ksh", "powershell", "cmd", "cmd", "python", undefined]);
  });
  it("reads batch comments, labels, variables and keywords", () => {
    const kinds = (text: string) => {
      const stream = new StringStream(text, 4, 2);
      const out: string[] = [];
      while (!stream.eol()) {
        stream.start = stream.pos;
        const kind = batch.token(stream, null);
        if (kind) out.push(`${kind}:${stream.current().trim()}`);
      }
      return out;
    };
    expect(kinds("REM nightly copy")).toEqual(["comment:REM nightly copy"]);
    expect(kinds(":retry")).toEqual(["labelName::retry"]);
    expect(kinds('echo %PATH% "x y"')).toEqual(["keyword:echo", "variableName:%PATH%", 'string:"x y"']);
  });
});
