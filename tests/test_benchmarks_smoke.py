"""Smoke tests for benchmarks/: the scripts run on a tiny configuration and report sanely.

These check that the benchmarks work, never how fast anything is. PyTorch is optional: its
contenders are expected exactly when torch imports, and a run without it is checked too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
HAS_TORCH = importlib.util.find_spec("torch") is not None
TORCH_CONTENDERS = {"torch_eager", "torch_channels_last", "torch_compile"}

RESULT_KEYS = {
    "model", "batch", "mode", "contender", "median_s", "q25_s", "q75_s", "iqr_s",
    "images_per_s", "inner", "samples_s", "finite", "baseline", "ratio_vs_baseline",
    "flops", "gflops", "fraction_of_peak", "xla_flops", "extra",
}  # fmt: skip


def _has_onednn() -> bool:
    from cnndsl.backends.jax import onednn

    return onednn.available()[0]


# `cnndsl_onednn` runs only where the optional kernel is installed (CI's second pass has it).
CNNDSL = {"cnndsl", "cnndsl_xla", "cnndsl_folded"} | ({"cnndsl_onednn"} if _has_onednn() else set())
JAX_CONTENDERS = {
    "lenet5": {"flax_nnx", "jax_lax", "jax_im2col", "cnndsl_tuned"} | CNNDSL,
    "resnet18": {"flax_nnx", "jax_lax"} | CNNDSL,
}


def _load(name: str) -> ModuleType:
    """Import benchmarks/NAME.py (benchmarks/ is scripts, not a package)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def _run_tiny(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "results.json"
    md = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_train.py"), "--tiny", "--out", str(out), "--md", str(md), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "CNNDSL_CACHE_DIR": str(tmp_path / "cache")},  # the autotuner's cache
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert md.read_text().count("| lenet5 |") > 0
    return json.loads(out.read_text())


@pytest.mark.slow  # over 10 s on 2 cores
def test_bench_train_tiny_produces_json(tmp_path: Path) -> None:
    data = _run_tiny(tmp_path)
    assert {"benchmark", "machine", "matmul_peak", "config", "results", "notes"} <= set(data)
    assert data["config"]["tiny"] is True
    assert data["matmul_peak"]["gflops"] > 0
    assert {"cpu", "cores", "versions", "date"} <= set(data["machine"])

    rows = data["results"]
    for row in rows:
        assert RESULT_KEYS <= set(row), RESULT_KEYS - set(row)
        assert row["images_per_s"] > 0 and row["median_s"] > 0
        assert row["finite"], f"non-finite output: {row['model']} {row['mode']} {row['contender']}"
        assert len(row["samples_s"]) == data["config"]["reps"]
    for model, jax_names in JAX_CONTENDERS.items():
        for mode in ("train", "infer"):
            names = {r["contender"] for r in rows if r["model"] == model and r["mode"] == mode}
            expected = jax_names | (TORCH_CONTENDERS if HAS_TORCH else set())
            assert names == expected, (model, mode, names)
            base = [r for r in rows if r["model"] == model and r["mode"] == mode and r["contender"] == "flax_nnx"]
            assert base[0]["ratio_vs_baseline"] == pytest.approx(1.0)
    if not HAS_TORCH:
        assert any("torch" in note for note in data["notes"])


def test_contenders_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """With torch not importable, the torch contenders are skipped with a note, not an error."""
    bench = _load("bench_train")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    notes: list[str] = []
    contenders = bench.contenders_for("lenet5", notes=notes)
    assert set(contenders) == JAX_CONTENDERS["lenet5"]
    assert notes and "torch not importable" in notes[0]


def test_register_contender_hook() -> None:
    """An extra NNX contender plugs in through the hook and runs a train step."""
    bench = _load("bench_train")
    ref = _load("reference")
    bench.register_contender(
        "lenet5", "extra", lambda: bench.nnx_contender(lambda rngs: ref.LeNet5(rngs=rngs), ref.LENET5)
    )
    try:
        c = bench.contenders_for("lenet5", skip_torch=True)["extra"]
        state, x, y = c.init(4, 0)
        state, loss = c.train_step(state, x, y)
        assert c.infer(state, x).shape == (4, 10)
        assert float(loss) > 0
    finally:
        bench.EXTRA_CONTENDERS["lenet5"].pop("extra")


@pytest.mark.slow  # over 10 s on 2 cores
def test_reference_lenet_equivalence() -> None:
    """Parameter counts agree across frameworks; both plain-JAX lowerings match Flax."""
    ref = _load("reference")
    diffs = ref.verify_lenet()
    assert {"jax_lax_vs_flax", "jax_im2col_vs_lax", "grad_im2col_vs_lax"} <= set(diffs)
    assert ref.LENET5.params == 61_706
    assert ref.RESNET18.params == 11_173_962


@pytest.mark.slow  # over 10 s on 2 cores
def test_bench_static_tiny_produces_json(tmp_path: Path) -> None:
    """bench_static.py --tiny (LeNet-5): every row timed, or recorded as failed; checks pass."""
    out, md = tmp_path / "static.json", tmp_path / "static.md"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_static.py"), "--tiny", "--out", str(out), "--md", str(md)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "CNNDSL_CACHE_DIR": str(tmp_path / "cache")},  # the autotuner's cache
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert {"benchmark", "machine", "config", "model", "results", "ratios", "checks", "errors", "notes"} <= set(data)
    assert data["benchmark"] == "static" and data["config"]["tiny"] is True
    assert data["model"]["name"] == "LeNet5"
    expected = {
        "load", "functional", "eval_shape", "eval_shape_cached", "tabulate",
        "cli_compile", "cli_compile_json", "python_import_jax", "python_startup",
    }  # fmt: skip
    results = data["results"]
    assert set(results) | set(data["errors"]) == expected, set(results) ^ expected
    assert set(data["errors"]) <= {"tabulate"}  # Flax's tabulate may fail on cnndsl's Model; nothing else may
    for name, r in results.items():
        assert r["first_s"] > 0 and r["median_s"] > 0, name
        assert len(r["samples_s"]) == data["config"]["reps"]
    assert data["ratios"]["eval_shape fresh trace / load warm"] > 0
    assert data["checks"]["shapes_agree"] and data["checks"]["eval_shape_output_shape"] == [1, 10]
    assert data["checks"]["cli_imports_jax"] is False
    assert "| load |" in md.read_text()


def test_cnndsl_specs_are_the_reference_models():
    """The `.cnn` files the cnndsl contenders compile have the reference models' parameters."""
    import cnndsl

    bench = _load("bench_train")
    ref = _load("reference")
    for model, path in bench.CNN_FILES.items():
        assert cnndsl.load(ROOT / path).params["trainable"] == ref.SPECS[model].params, model
