/** The script editor: CodeMirror 6 with the interpreter's highlighting. */
import CodeMirror from "@uiw/react-codemirror";
import { languageOf } from "../lib/languages";

export function CodeEditor(props: { value?: string; onChange?: (value: string) => void; interpreter: string; label: string; readOnly?: boolean }) {
  return (
    <div data-testid="code-editor" style={{ border: "1px solid #d9d9d9", borderRadius: 6 }}>
      <CodeMirror
        aria-label={props.label}
        value={props.value ?? ""}
        height="320px"
        readOnly={props.readOnly}
        extensions={languageOf(props.interpreter)}
        onChange={(value) => props.onChange?.(value)}
        basicSetup={{ foldGutter: false }}
      />
    </div>
  );
}
