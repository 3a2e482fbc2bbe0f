"""`cnndsl/ops/` is the language's definition of each layer, with no JAX in it: importing the
registry (and compiling a network) loads no JAX, and no module there names it in an import.
The JAX lowerings are in `cnndsl/backends/jax/lowerings/`."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import cnndsl.ops

OPS_DIR = Path(cnndsl.ops.__file__).parent


def test_importing_the_ops_and_compiling_loads_no_jax() -> None:
    code = (
        "import sys\n"
        "import cnndsl.ops\n"
        "from cnndsl.compiler import compile_text\n"
        "compile_text('input 3@8x8\\nconv 4@3x3 -> bn -> relu -> maxpool 2 -> flatten -> dense 2')\n"
        "print(sorted(m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'jaxlib', 'flax'))))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(OPS_DIR.parents[1]), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_no_module_in_ops_imports_jax() -> None:
    files = sorted(OPS_DIR.glob("*.py"))
    assert len(files) > 5
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            else:
                continue
            for name in names:
                if (
                    name.split(".")[0] in ("jax", "jaxlib", "flax")
                    or ".backends" in name
                    or name.startswith("backends")
                ):
                    found.append(f"{path.name}:{node.lineno}: {name}")
    assert found == [], "ops/ imports JAX or a backend: " + "; ".join(found)
