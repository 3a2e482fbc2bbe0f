"""Train LeNet-5 on MNIST and a small net on Fashion-MNIST with `cnndsl.training`; report
test accuracy, wall time and images/s.

    python benchmarks/train_mnist.py                       # both, data from ../shared/data
    python benchmarks/train_mnist.py --only mnist --json results.json
    python benchmarks/train_mnist.py --data-root DIR       # DIR/mnist, DIR/fashion-mnist

Targets: MNIST >= 99.0% (LeCun et al. 1998 report 0.95% error for LeNet-5), Fashion-MNIST
>= 90%. The IDX files are never downloaded: without them a task is skipped (exit status 0);
Fashion-MNIST is also found in /usr/share/datasets/fashion-mnist (Debian's
dataset-fashion-mnist). Exit status 1 when a task that ran missed its target.

The recipes are the specs' own `train` sections plus the overrides below (LeNet-5's file has
none): Adam with a cosine-decayed rate, no augmentation for MNIST. Images/s counts training
steps only (host input pipeline included; evaluation, checkpoints and compilation not).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cnndsl  # noqa: E402  (after the sys.path line above)

TASKS = {
    "mnist": {
        "spec": ROOT / "examples" / "lenet5.cnn",
        "folder": "mnist",
        "target": 0.99,
        "overrides": {"optimizer": "adam(lr=0.002)", "schedule": "cosine", "batch": 128, "epochs": 8},
    },
    "fashion": {
        "spec": ROOT / "examples" / "fashion.cnn",
        "folder": "fashion-mnist",
        "target": 0.90,
        "overrides": {},
    },
}
IDX = "train-images-idx3-ubyte.gz"


def find_data(task: str, root: Path) -> Path | None:
    folder = TASKS[task]["folder"]
    for d in (root / folder, Path("/usr/share/datasets") / folder):
        if (d / IDX).is_file():
            return d
    return None


def machine() -> dict:
    import jax

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average": load,
        "devices": [str(d) for d in jax.devices()],
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "cnndsl": cnndsl.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def run(task: str, data: Path, out: Path, epochs: int | None, progress: bool) -> dict:
    from cnndsl.training import train

    t = TASKS[task]
    overrides = {**t["overrides"], "data": f"{t['folder']}:{data}"}
    if epochs is not None:
        overrides["epochs"] = epochs
    print(f"\n=== {task}: {Path(t['spec']).name} on {data} ===", flush=True)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.monotonic()
    r = train(t["spec"], overrides=overrides, out=out / task, overwrite=True, progress=progress)
    wall = time.monotonic() - start
    acc = r.test["acc"] if r.test else None
    return {
        "task": task,
        "spec": str(Path(t["spec"]).relative_to(ROOT)),
        "data": str(data),
        "config": r.config.to_dict(),
        "epochs": r.epoch,
        "steps": r.step,
        "test_accuracy": acc,
        "test_loss": r.test["loss"] if r.test else None,
        "best_val_accuracy": (r.summary["best"] or {}).get("val_acc"),
        "target": t["target"],
        "met": acc is not None and acc >= t["target"],
        "wall_s": round(wall, 1),
        "train_s": r.summary["train_s"],
        "compile_s": r.summary["compile_s"],
        "images_per_s": r.summary["images_per_s"],
        "per_epoch_images_per_s": [h["images_per_s"] for h in r.history],
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data-root", type=Path, default=ROOT.parent / "shared" / "data", help="holds mnist/ and fashion-mnist/"
    )
    p.add_argument("--only", choices=tuple(TASKS), action="append", help="run only this task (repeatable)")
    p.add_argument("--epochs", type=int, help="override the epochs of every task (for a quick look)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench", help="run folders (default runs/bench)")
    p.add_argument("--json", type=Path, default=None, help="write the results here (default OUT/train_mnist.json)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    args = p.parse_args(argv)

    tasks = args.only or list(TASKS)
    found = {t: find_data(t, args.data_root) for t in tasks}
    if not any(found.values()):
        print(f"skipped: no MNIST or Fashion-MNIST IDX files under {args.data_root} (nothing is downloaded)")
        return 0
    results, skipped = [], []
    for task in tasks:
        if found[task] is None:
            skipped.append(task)
            print(f"skipped {task}: no {TASKS[task]['folder']}/{IDX} under {args.data_root}")
            continue
        results.append(run(task, found[task], args.out, args.epochs, bool(args.progress)))
    doc = {"benchmark": "train_mnist", "machine": machine(), "results": results, "skipped": skipped}
    path = args.json or args.out / "train_mnist.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print("\n task      test acc   target   wall     train    img/s   epochs")
    for r in results:
        acc = "–" if r["test_accuracy"] is None else f"{100 * r['test_accuracy']:.2f}%"
        mark = "ok" if r["met"] else "MISSED"
        print(
            f" {r['task']:<9} {acc:>8}   {100 * r['target']:.0f}%    {r['wall_s']:>6.1f} s {r['train_s']:>6.1f} s"
            f" {r['images_per_s'] or 0:>7,.0f}   {r['epochs']}  {mark}"
        )
    print(f"load average {doc['machine']['load_average']} · results in {path}")
    return 0 if all(r["met"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
