"""The package's imports: no cycle, nothing a plain install lacks, and no process loading what it never
runs (the layering itself is import-linter's contracts in pyproject.toml, run by `make lint`)."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import grimp
from packaging.requirements import Requirement

from tests.helpers import visionq_env


def strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """The import cycles of `graph`: its strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_module_of_visionq_imports_itself_back_through_others() -> None:
    # Every import counts: inside functions and behind TYPE_CHECKING too (grimp's default).
    graph = grimp.build_graph("visionq", cache_dir=None)

    assert len(graph.modules) > 50
    assert strongly_connected(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in (("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")):
        graph.add_import(importer=importer, imported=imported)

    assert strongly_connected(graph) == [{"a", "b", "c"}]


def _name(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _installed_by_a_plain_install() -> set[str]:
    """visionq's own dependencies, without extras, and all of theirs, as installed here."""
    found: set[str] = set()
    todo = ["visionq"]
    while todo:
        name = todo.pop()
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue  # an extra's (the dev tools), or not for this platform
            dependency = _name(requirement.name)
            if dependency not in found:
                found.add(dependency)
                todo.append(dependency)
    return found


def test_every_package_visionq_imports_comes_with_a_plain_install() -> None:
    # Imports inside functions count too: a command that imports a dev tool fails on a plain install.
    graph = grimp.build_graph("visionq", include_external_packages=True, cache_dir=None)
    external = {m for m in graph.modules if m.split(".")[0] != "visionq" and m not in sys.stdlib_module_names}
    plain = _installed_by_a_plain_install()
    providers = importlib.metadata.packages_distributions()

    missing = {m: providers.get(m) for m in external if not {_name(d) for d in providers.get(m, [])} & plain}

    assert {"httpx", "cv2", "onnxruntime"} <= external  # the check sees what it must
    assert missing == {}


def _imported_modules(code: str, folder: Path) -> set[str]:
    """The modules a fresh interpreter, in `folder` with its data dir there, has imported after `code`."""
    probe = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=visionq_env(folder / "data"),
        cwd=folder,  # no developer's .env
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(result.stdout.split())


def test_the_command_lines_help_loads_no_inference_runtime_database_or_web_framework(tmp_path: Path) -> None:
    loaded = _imported_modules(
        "import sys\nsys.argv = ['visionq', '--help']\nfrom visionq.cli import main\ntry:\n    main()\n"
        "except SystemExit:\n    pass",
        tmp_path,
    )

    assert "visionq.cli" in loaded
    assert not {"onnxruntime", "openvino", "onnx", "cv2", "numpy", "sqlalchemy", "celery", "fastapi"} & loaded


def test_the_api_process_loads_no_inference_runtime(tmp_path: Path) -> None:
    # The app `visionq api` serves, built whole: database migrated, broker app made, routes mounted.
    loaded = _imported_modules(
        "from visionq.api.app import create_default_app\ncreate_default_app()", tmp_path
    )

    assert {"visionq.api.app", "fastapi", "celery", "sqlalchemy"} <= loaded
    runtimes = {"onnxruntime", "openvino", "onnx", "visionq.detect.engines", "visionq.detect.detector"}
    assert not (runtimes | {"visionq.worker"}) & loaded
