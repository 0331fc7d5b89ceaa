"""The house rules: the layers contract (import-linter), no import circles, small modules and
package faces, no type dispatch on adapter classes outside the family."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from adaptkit.adapters import ADAPTERS

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "adaptkit"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(cwd), "PATH": str(LINT_IMPORTS.parent)})


@pytest.mark.slow
def test_the_layers_contract_holds_and_breaks_on_an_upward_import(tmp_path):
    kept = lint_imports(ROOT)
    assert kept.returncode == 0 and "1 kept, 0 broken" in kept.stdout, kept.stdout + kept.stderr
    shutil.copytree(PACKAGE, tmp_path / "adaptkit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    data_base = tmp_path / "adaptkit" / "data" / "base.py"
    data_base.write_text(data_base.read_text() + "\n\ndef _upward():\n    from ..protocol import compare\n\n"
                         "    return compare\n")
    broken = lint_imports(tmp_path)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "BROKEN" in broken.stdout and "adaptkit.data.base -> adaptkit.protocol" in broken.stdout


def test_no_import_circles_anywhere_in_the_package():
    graph = grimp.build_graph("adaptkit", cache_dir=None)
    modules = sorted(graph.modules)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in modules}
    state, stack, cycles = {}, [], []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(edges[module]):
            # A package's face importing its own modules is how a package is built, not a circle.
            if target.startswith(module + "."):
                continue
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in modules:
        if module not in state:
            visit(module)
    assert cycles == []


def test_modules_are_small_and_package_faces_only_re_export():
    sizes = {path.relative_to(ROOT): len(path.read_text(encoding="utf-8").splitlines())
             for path in PACKAGE.rglob("*.py")}
    assert {str(p): n for p, n in sizes.items() if n > 450} == {}
    assert {str(p): n for p, n in sizes.items() if p.name == "__init__.py" and n >= 60} == {}


def test_no_type_dispatch_on_adapter_classes_outside_the_family():
    names = "|".join(sorted(cls.__name__ for cls in ADAPTERS.values() if cls.__module__.startswith("adaptkit.")))
    dispatch = re.compile(rf"isinstance\([^)]*\b({names})\b")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in PACKAGE.rglob("*.py")
                 if "adapters" not in path.relative_to(PACKAGE).parts
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if dispatch.search(line)]
    assert offenders == []


def test_adapters_read_only_parameters_they_have():
    parameters = {name for cls in ADAPTERS.values() for name in cls._parameter_constraints}
    guard = re.compile(r"getattr\(self, \"(\w+)\"")
    offenders = [f"{path.name}: {m.group(1)}" for path in (PACKAGE / "adapters").glob("*.py")
                 for m in guard.finditer(path.read_text(encoding="utf-8")) if m.group(1) in parameters]
    assert offenders == []


def test_ruff_is_clean_with_the_configuration_in_pyproject():
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run([str(ruff), "check", "adaptkit", "tests", "tools", "benchmarks"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _requirement_names(requirements) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def _extra(project: dict, name: str) -> set[str]:
    """The distributions an extra brings, its adaptkit[...] references followed."""
    names = set()
    for requirement in project["optional-dependencies"][name]:
        nested = re.fullmatch(r"adaptkit\[([\w,]+)\]", requirement)
        names |= set().union(*(_extra(project, n) for n in nested.group(1).split(","))) if nested else \
            _requirement_names([requirement])
    return names


def test_no_extra_installs_both_faiss_builds_and_the_base_installs_neither():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not any(name.startswith("faiss") for name in _requirement_names(project["dependencies"]))
    for extra in project["optional-dependencies"]:
        assert not {"faiss-cpu", "faiss-gpu-cu12"} <= _extra(project, extra), extra
    assert "faiss-cpu" in _extra(project, "dev") and "faiss-gpu-cu12" in _extra(project, "gpu")


def test_every_third_party_module_the_package_imports_is_declared():
    import ast
    from importlib.metadata import packages_distributions

    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = _requirement_names(project["dependencies"])
    for extra in project["optional-dependencies"]:
        declared |= _extra(project, extra)
    modules = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {"adaptkit", "__future__", "tomli", "spacy", "ipywidgets"}
    distributions = packages_distributions()
    undeclared = {m: distributions.get(m) for m in third_party
                  if not {d.lower().replace("_", "-") for d in distributions.get(m, [m])} & declared}
    assert undeclared == {}
