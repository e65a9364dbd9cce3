"""``blocks/`` and ``flows/`` depend on ``sms_plugin``, never the reverse: no module of
``sms_plugin`` imports them, at the top or inside a function. Deployments name the flows by
entrypoint instead, the same flows ``prefect.yaml`` names."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema

from sms_plugin import deploy

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = {"blocks", "flows"}


def _imported_packages(path: Path) -> set[str]:
    packages: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            packages.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            packages.add(node.module.split(".")[0])
    return packages


def test_the_scan_sees_imports_inside_functions(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from blocks.hosts import SSHHost\n    import flows.run_script\n")
    assert _imported_packages(sample) == FORBIDDEN


def test_sms_plugin_never_imports_blocks_or_flows():
    offenders = {
        str(path.relative_to(REPO)): sorted(_imported_packages(path) & FORBIDDEN)
        for path in sorted((REPO / "sms_plugin").rglob("*.py"))
        if _imported_packages(path) & FORBIDDEN
    }
    assert offenders == {}


def test_deployments_name_the_flows_prefect_yaml_names_with_the_same_parameter_schema():
    project = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    by_file = {entry["name"]: entry["entrypoint"] for entry in project["deployments"]}
    pairs = [(by_file["on-demand"], deploy.RUN_SCRIPT_ENTRYPOINT), (by_file["every-30s"], deploy.HOUSEKEEPING_ENTRYPOINT)]
    for file_entrypoint, module_entrypoint in pairs:
        path, _, function = file_entrypoint.partition(":")
        assert module_entrypoint == f"{path.removesuffix('.py').replace('/', '.')}.{function}"
        from_file = load_flow_from_entrypoint(str(REPO / file_entrypoint), use_placeholder_flow=False)
        from_module = load_flow_from_entrypoint(module_entrypoint, use_placeholder_flow=False)
        assert from_file.name == from_module.name
        assert parameter_schema(from_file).model_dump() == parameter_schema(from_module).model_dump()
