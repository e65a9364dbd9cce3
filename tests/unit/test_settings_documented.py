"""Every ``SMS_*`` environment variable the code names is documented in the README or docs/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = ("sms_plugin", "flows", "blocks")
VARIABLE = re.compile(r"^SMS_[A-Z0-9_]*[A-Z0-9]$")


def variables_in_code() -> dict[str, str]:
    """Each string constant that is an ``SMS_*`` name, with the first file that names it."""
    found: dict[str, str] = {}
    for folder in CODE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and VARIABLE.match(node.value):
                    found.setdefault(node.value, str(path.relative_to(ROOT)))
    return found


def documentation() -> str:
    return "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def test_the_scan_finds_the_variables_it_must() -> None:
    names = variables_in_code()
    assert {"SMS_DATABASE_URL", "SMS_HOME", "SMS_OIDC_ISSUER", "SMS_RUN_ID"} <= names.keys()


def test_every_sms_variable_is_documented() -> None:
    docs = documentation()
    missing = {name: where for name, where in variables_in_code().items() if not re.search(rf"\b{name}\b", docs)}
    assert not missing, f"SMS_* variables read by the code but named nowhere in README.md or docs/: {missing}"
