"""Training, evaluation and prediction for `.cnn` networks (`cnndsl train / eval / predict`).

    from cnndsl.training import train, evaluate, predict
    result = train("examples/digits.cnn", overrides={"epochs": 5}, out="runs/digits")
    print(result.test)                                    # {"loss", "acc", "top5"}
    ev = evaluate(cnndsl.load("examples/digits.cnn"), "runs/digits")
    predict(net, "runs/digits", ["seven.png"], top=3)

Pieces: `config` (the `train { }` settings, no JAX), `engine` (losses, optimizers, the jitted
steps, sharding), `loop` (the run), `weights` (loading checkpoints), `evaluation` (predict, evaluate).
Importing the package does not import JAX; its functions do.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import SETTINGS, TrainConfig, apply_overrides, settings_to_config

# Everything else imports JAX, so it loads on first use: `cnndsl compile` reads SETTINGS
# for its `train --help` without starting JAX.
_LAZY = {
    "Evaluation": "evaluation",
    "Prediction": "evaluation",
    "evaluate": "evaluation",
    "predict": "evaluation",
    "TrainResult": "loop",
    "plot_history": "loop",
    "resolve_config": "loop",
    "train": "loop",
    "load_weights": "weights",
    "open_checkpoint": "weights",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SETTINGS",
    "Evaluation",
    "Prediction",
    "TrainConfig",
    "TrainResult",
    "apply_overrides",
    "evaluate",
    "load_weights",
    "open_checkpoint",
    "plot_history",
    "predict",
    "resolve_config",
    "settings_to_config",
    "train",
]
