"""Who may import whom (DESIGN.md), checked on the source: a stray import fails here,
not in a review.

* ``stages/`` never imports ``pipeline/``, ``report/`` or Ray, and of ``model_hooks/``
  only the packed-shard format (the packer's one contact with the trainer side);
* ``model_hooks/`` never imports ``pipeline/``, ``report/`` or a stage;
* ``report/`` reads what a run wrote and never imports Ray;
* ``strict_config`` and ``demo/`` import no project package, so anything may use them;
* in ``pipeline/``, only ``ray_exec.py`` imports Ray, none imports Ray Data, and no
  modules import each other in a circle (nor do those of ``model_hooks/``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROJECT = ("pipeline", "stages", "model_hooks", "report", "demo", "strict_config", "bench")

FORBIDDEN = {
    "stages": ("pipeline", "report", "demo", "bench", "ray", "model_hooks"),
    "model_hooks": ("pipeline", "report", "demo", "bench", "stages"),
    "report": ("ray", "demo", "bench"),
    "strict_config": PROJECT,
    "demo": PROJECT,
}
ALLOWED = {"stages": ("model_hooks.shard_format",)}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_it_may(package: str):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    offences = []
    for path in files:
        for module in sorted(imported_modules(path)):
            if any(_is_under(module, allowed) for allowed in ALLOWED.get(package, ())):
                continue
            if any(_is_under(module, banned) for banned in FORBIDDEN[package]):
                offences.append(f"{path.relative_to(REPO)}: imports {module}")
    assert offences == []


def test_the_scan_sees_function_level_imports(tmp_path: Path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    import ray\n    from pipeline.config import X\n")
    assert {"ray", "pipeline.config", "pipeline.config.X"} <= imported_modules(source)


def test_only_ray_exec_imports_ray_in_pipeline():
    """Issue 19: one module of the curation side talks to Ray (``pipeline/ray_exec.py``);
    the other modules hand it plain functions."""
    importers = sorted(
        str(path.relative_to(REPO))
        for path in (REPO / "pipeline").rglob("*.py")
        if any(_is_under(module, "ray") for module in imported_modules(path))
    )
    assert importers == ["pipeline/ray_exec.py"]


def test_curation_imports_no_ray_data():
    """Issue 19: the global steps' exchanges are task rounds (``round_driver.py``), so no
    module of ``pipeline/`` imports Ray Data (its executor and helper actors cost more
    than the work on small runs, and ``import ray.data`` ~140 MiB a process)."""
    importers = sorted(
        str(path.relative_to(REPO))
        for path in (REPO / "pipeline").rglob("*.py")
        if any(_is_under(module, "ray.data") for module in imported_modules(path))
    )
    assert importers == []


@pytest.mark.parametrize("package", ["pipeline", "model_hooks"])
def test_package_modules_import_no_circle(package: str):
    """Issue 19: ``global_steps`` and the step modules once imported each other, hidden
    by imports inside functions; the scan counts those too. ``model_hooks/`` too: the
    trainer is split by job (config, optimizer, step, checkpoint, run folder, loop) and
    the pieces import downwards only."""
    modules = {f"{package}.{path.stem}": path for path in (REPO / package).glob("*.py")}
    graph = {name: imported_modules(path) & modules.keys() for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        for imported in sorted(graph[name]):
            assert imported not in path, " -> ".join([*path, imported])
            if imported not in done:
                visit(imported, [*path, imported])
        done.add(name)

    for name in sorted(graph):
        visit(name, [name])
