"""CI: every declared dependency is imported, and every imported third-party package is declared.

Runtime dependencies (`[project] dependencies`) are checked against the imports in `cnndsl/`;
the `test` extra against the imports in `tests/` (tools run as commands, such as pytest and ruff,
are exempt). Run from the repository root inside the installed venv: `python .ci/check_deps.py`.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = {"pytest", "pytest-xdist", "ruff"}  # run as commands or plugins, not imported


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imports(folder: Path) -> set[str]:
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif (  # __import__("pkg") and importlib.import_module("pkg") with a literal name
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("__import__", "import_module")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value.split(".")[0])
    return found


def _distributions(modules: set[str]) -> dict[str, set[str]]:
    """Third-party distribution name -> the modules imported from it (stdlib and local left out)."""
    table = packages_distributions()
    local = {p.stem for folder in ("benchmarks", "tests") for p in (ROOT / folder).glob("*.py")}  # on sys.path
    out: dict[str, set[str]] = {}
    for m in modules:
        if m in sys.stdlib_module_names or m in ("cnndsl", "tests", "benchmarks", "__future__") or m in local:
            continue
        for dist in table.get(m, [m]):
            out.setdefault(dist.lower().replace("_", "-"), set()).add(m)
    return out


def check(declared: set[str], folder: Path, what: str, also_allowed: set[str] = frozenset()) -> list[str]:
    used = _distributions(_imports(folder))
    problems = [
        f"{what}: `{d}` is declared but nothing in {folder.name}/ imports it"
        for d in sorted(declared - set(used) - TOOLS)
    ]
    problems += [
        f"{folder.name}/ imports {', '.join(sorted(mods))} (distribution `{d}`), which {what} does not declare"
        for d, mods in sorted(used.items())
        if d not in declared | also_allowed
    ]
    return problems


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    test = {_name(r) for r in project["optional-dependencies"]["test"]}
    # An optional feature may import a package of an extra (torch for reading .pth files),
    # where its import is guarded: the package is then declared, but not for everyone.
    extras = {_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    problems = check(runtime, ROOT / "cnndsl", "[project] dependencies", also_allowed=extras)
    problems += check(test, ROOT / "tests", "the `test` extra", also_allowed=runtime)
    for p in problems:
        print("dependency check:", p)
    if not problems:
        print(f"dependency check: ok ({len(runtime)} runtime, {len(test)} test dependencies, each imported)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
