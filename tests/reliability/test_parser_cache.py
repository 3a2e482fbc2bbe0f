"""Nothing cnndsl reads is unpickled (issue 9, section 1).

Lark's `cache=True` unpickles `$TMPDIR/.lark_cache_<user>_<sha256>_<py>.tmp`, a name any local
user can predict and plant first. These tests plant a malicious pickle at exactly that path (as
Lark computes it for the options cnndsl used) and under every other `.lark*` name Lark could
use, run `cnndsl compile` and `cnndsl.load` with that temp dir, and check the payload never ran
and nothing was cached there. A static check keeps unpickling out of the package source.
"""

from __future__ import annotations

import ast
import getpass
import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import lark

from cnndsl.syntax.parse import grammar_text

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "cnndsl"
LENET = ROOT / "examples" / "lenet5.cnn"

# The keyword arguments cnndsl passed to `lark.Lark` when it used the cache (in that order).
_OLD_OPTIONS = {"parser": "lalr", "propagate_positions": True, "maybe_placeholders": True, "cache": True}


def lark_cache_path(tmpdir: Path, options: dict[str, object], *, user: str, grammar_cache: bool = False) -> Path:
    """The file `lark.Lark(grammar_text(), **options)` unpickles, computed as lark/lark.py does."""
    unhashable = ("transformer", "postlex", "lexer_callbacks", "edit_terminals", "_plugins")
    options_str = "".join(k + str(v) for k, v in options.items() if k not in unhashable)
    text = grammar_text() + options_str + lark.__version__ + str(sys.version_info[:2])
    digest = hashlib.sha256(text.encode("utf8")).hexdigest()
    kind = "cache_grammar" if grammar_cache else "cache"
    return tmpdir / f".lark_{kind}_{user}_{digest}_{sys.version_info[0]}_{sys.version_info[1]}.tmp"


class _Payload:
    """Unpickling this writes `marker`: proof that a planted pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('the planted pickle ran')",))


def _plant(tmpdir: Path, marker: Path) -> list[Path]:
    blob = pickle.dumps(_Payload(marker))
    users = {getpass.getuser(), "unknown"}
    variants = [_OLD_OPTIONS, {k: v for k, v in _OLD_OPTIONS.items() if k != "cache"}]
    paths = {
        lark_cache_path(tmpdir, opts, user=u, grammar_cache=g)
        for u in users
        for opts in variants
        for g in (False, True)
    }
    for p in paths:
        # Lark reads one line (the grammar's hash), then unpickles: the payload runs before any check.
        p.write_bytes(b"0" * 64 + b"\n" + blob + blob)
    return sorted(paths)


def _run(code: str, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmpdir), "TEMP": str(tmpdir), "TMP": str(tmpdir), "CNNDSL_DEBUG": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_planted_path_is_the_one_lark_would_read(tmp_path: Path) -> None:
    """The test's path formula matches Lark's own: with `cache=True` Lark would run the payload."""
    marker = tmp_path / "ran"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    _plant(tmpdir, marker)
    code = (
        "import lark; from cnndsl.syntax.parse import grammar_text; "
        "lark.Lark(grammar_text(), parser='lalr', propagate_positions=True, maybe_placeholders=True, cache=True)"
    )
    r = _run(code, tmpdir)
    assert r.returncode == 0, r.stderr[-2000:]
    assert marker.exists(), "the planted pickle was not at the path Lark reads: the regression test would prove nothing"


def test_compile_and_load_never_unpickle_a_planted_cache(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    planted = _plant(tmpdir, marker)
    compile_run = _run(
        f"import sys; from cnndsl.cli import main; sys.exit(main(['compile', '--color', 'never', {str(LENET)!r}]))",
        tmpdir,
    )
    assert compile_run.returncode == 0, compile_run.stderr[-2000:]
    assert "LeNet5" in compile_run.stdout
    load_run = _run(f"import cnndsl; print(cnndsl.load({str(LENET)!r}).name)", tmpdir)
    assert load_run.returncode == 0, load_run.stderr[-2000:]
    assert load_run.stdout.strip() == "LeNet5"
    assert not marker.exists(), "a planted pickle in TMPDIR was executed"
    left = sorted(p for p in tmpdir.iterdir() if p.name.startswith(".lark"))
    assert left == planted, "cnndsl wrote a parser cache into the shared temp dir"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield node, owner, name


def test_the_package_source_never_unpickles() -> None:
    """No pickle-family import, no `Lark(..., cache=...)`, no `allow_pickle=True`, and every
    `torch.load` is `weights_only=True` (PyTorch's restricted unpickler) anywhere in cnndsl/."""
    unpicklers = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"}
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    problems: list[str] = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                problems += [f"{where}:{node.lineno}: import {a.name}" for a in node.names if a.name in unpicklers]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in unpicklers:
                problems.append(f"{where}:{node.lineno}: from {node.module} import ...")
        for call, owner, name in _calls(tree):
            keywords = {k.arg: k.value for k in call.keywords}
            if name == "Lark" and "cache" in keywords:
                problems.append(f"{where}:{call.lineno}: Lark(..., cache=...)")
            flag = keywords.get("allow_pickle")
            if (
                isinstance(flag, ast.Constant)
                and flag.value is True
                or (flag is not None and not isinstance(flag, ast.Constant))
            ):
                problems.append(f"{where}:{call.lineno}: allow_pickle is not False")
            if owner == "torch" and name == "load":
                safe = keywords.get("weights_only")
                if not (isinstance(safe, ast.Constant) and safe.value is True):
                    problems.append(f"{where}:{call.lineno}: torch.load without weights_only=True")
            if owner in unpicklers and name in ("load", "loads", "Unpickler"):
                problems.append(f"{where}:{call.lineno}: {owner}.{name}")
    assert not problems, "\n".join(problems)
