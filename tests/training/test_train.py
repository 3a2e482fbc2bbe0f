"""Training (cnndsl.training): settings, losses, the loop, resume, sharding, transfer, errors.

Everything runs on scikit-learn's bundled 8x8 digits, so no test needs a download; each
training run takes a few seconds on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cnndsl
from cnndsl.errors import ArgumentError, CnnError, CnnNameError, DataError
from cnndsl.training import TrainConfig, apply_overrides, engine, settings_to_config, train
from cnndsl.training.evaluation import evaluate, predict

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.cnn"

# BN, dropout and augmentation: everything that could break an exact resume.
SMALL = """network Small
input 1@8x8
conv 8@3x3 p1 nobias -> bn -> relu -> maxpool 2 -> flatten -> dropout 0.2 -> dense 10 -> softmax
train {
  optimizer = sgd(lr=0.05, momentum=0.9, nesterov=true)
  schedule = cosine
  warmup = 5
  batch = 32
  epochs = 2
  augment = "crop(pad=1), flip"
}
"""


def leaves_equal(a: object, b: object) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


def cfg_of(text: str) -> TrainConfig:
    return settings_to_config(cnndsl.loads("input 1@8x8\nflatten -> dense 10\n" + text).train_settings)


# --- settings ---------------------------------------------------------------------------------
def test_every_setting_is_read() -> None:
    cfg = cfg_of(
        """train {
          data = "mnist:somewhere"
          classes = (5, 6, 7)
          val = 0.2
          normalize = scale
          grayscale = true
          resize = false
          loss = mse
          label_smoothing = 0.1
          optimizer = adamw(lr=3e-4, weight_decay=0.05)
          schedule = step(every=2, gamma=0.5)
          warmup = 100
          batch = 128
          epochs = 7
          seed = 3
          augment = (crop, flip)
          freeze = (conv1, conv2)
          init = "runs/source"
        }"""
    )
    assert cfg.data == "mnist:somewhere" and cfg.classes == (5, 6, 7) and cfg.val == 0.2
    assert cfg.normalize == "0-1" and cfg.grayscale and not cfg.resize
    assert cfg.loss == "mse" and cfg.label_smoothing == pytest.approx(0.1)
    assert cfg.opt_kwargs() == {"lr": 3e-4, "weight_decay": 0.05, "b1": 0.9, "b2": 0.999, "eps": 1e-8}
    assert cfg.schedule == "step" and cfg.schedule_kwargs() == {"every": 2.0, "gamma": 0.5}
    assert (cfg.warmup, cfg.batch, cfg.epochs, cfg.seed) == (100, 128, 7, 3)
    assert (cfg.crop, cfg.flip) == (4, True)
    assert cfg.freeze == ("conv1", "conv2") and cfg.init == "runs/source"
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg_of("train { schedule = warmup(steps=50) }").warmup == 50
    assert cfg_of("train { }") == TrainConfig()


def test_cli_overrides_read_values_like_the_file() -> None:
    cfg = apply_overrides(
        cfg_of("train { optimizer = adam(lr=0.01) epochs = 9 }"),
        {
            "epochs": "3",
            "lr": "0.1",
            "optimizer": "sgd(momentum=0.9)",
            "classes": "5,6,7",
            "augment": "crop(pad=2), flip",
            "freeze": "conv*, dense1",
            "data": "mnist:../shared/data/mnist",
            "seed": 4,
        },
    )
    assert cfg.epochs == 3 and cfg.seed == 4 and cfg.classes == (5, 6, 7)
    assert cfg.opt_kwargs()["lr"] == 0.1 and cfg.opt_kwargs()["momentum"] == 0.9 and cfg.optimizer == "sgd"
    assert (cfg.crop, cfg.flip) == (2, True) and cfg.freeze == ("conv*", "dense1")
    assert cfg.data == "mnist:../shared/data/mnist"
    with pytest.raises(ArgumentError, match="--epochs: `epochs` must be a whole number"):
        apply_overrides(TrainConfig(), {"epochs": "2.5"})
    with pytest.raises(ArgumentError, match="--lr: cannot read"):
        apply_overrides(TrainConfig(), {"lr": "0.1.2"})


BAD_SETTINGS = [
    ("epoch = 3", CnnNameError, "unknown train setting `epoch`", "did you mean `epochs`?"),
    ("optimizer = adamm(lr=0.1)", CnnNameError, "unknown optimizer `adamm`", "did you mean `adam`"),
    ("optimizer = sgd(lr=0.1, momentom=0.9)", CnnNameError, "`sgd` has no argument `momentom`", "`momentum`"),
    ("optimizer = sgd(nesterov=true)", ArgumentError, "`nesterov=true` needs a momentum", ""),
    ("schedule = step(gamma=0.5)", ArgumentError, "`step` needs `every=`", ""),
    ("schedule = cosin", CnnNameError, "unknown schedule `cosin`", "`cosine`"),
    ("batch = 0", ArgumentError, "`batch` must be at least 1, got 0", ""),
    ("lr = fast", ArgumentError, "`lr` needs a number, got the name `fast`", ""),
    ("loss = nll", CnnNameError, "unknown loss `nll`", "choose one of"),
    ("augment = rotate", CnnNameError, "unknown augmentation `rotate`", ""),
    ("epochs = 2 epochs = 3", ArgumentError, "`epochs` is set twice", "first set at"),
    ("optimizer = adam(lr=0.1) lr = 0.2", ArgumentError, "learning rate is set twice", ""),
]


@pytest.mark.parametrize(("text", "kind", "message", "extra"), BAD_SETTINGS, ids=[b[0] for b in BAD_SETTINGS])
def test_setting_mistakes_point_at_the_setting(text: str, kind: type, message: str, extra: str) -> None:
    """`compile` checks the train section too (so `loads` raises): the same error either way."""
    text = f"input 1@8x8\nflatten -> dense 10\n\ntrain {{\n  {text}\n}}\n"
    with pytest.raises(kind) as e:
        cnndsl.training.resolve_config(cnndsl.loads(text, "net.cnn"))
    rendered = e.value.render()
    assert message in rendered and extra in rendered
    assert rendered.startswith("net.cnn:5:"), rendered  # file:line:col of the setting


# --- losses, schedules, optimizers --------------------------------------------------------------
def test_losses_are_defined_as_documented() -> None:
    out = jnp.asarray([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    y = jnp.asarray([0, 1])
    w = jnp.ones(2)
    ce = engine.Task("crossentropy", 3, True, None, 0.0)
    loss, m = engine.loss_and_metrics(ce, out, y, w)
    assert float(loss) == pytest.approx(float(optax.softmax_cross_entropy_with_integer_labels(out, y).sum()), rel=1e-6)
    assert m.tolist()[1:4] == [1.0, 2.0, 2.0]  # correct, top-5 (of 3), examples
    mse = engine.Task("mse", 3, False, None, 0.0)
    loss, _ = engine.loss_and_metrics(mse, out, y, w)
    t = np.eye(3)[[0, 1]]
    assert float(loss) == pytest.approx(0.5 * ((t - np.asarray(out)) ** 2).sum(), rel=1e-6)  # summed, ½Σ per example
    smooth = engine.Task("crossentropy", 3, True, None, 0.3)
    loss, _ = engine.loss_and_metrics(smooth, out, y, w)
    want = optax.softmax_cross_entropy(out, optax.smooth_labels(jax.nn.one_hot(y, 3), 0.3)).sum()
    assert float(loss) == pytest.approx(float(want), rel=1e-6)
    multi = jnp.asarray([[1, 0, 1], [0, 0, 1]])
    bce_logits = engine.Task("bce", 3, True, None, 0.0)
    bce_probs = engine.Task("bce", 3, False, None, 0.0)
    a, ma = engine.loss_and_metrics(bce_logits, out, multi, w)
    b, mb = engine.loss_and_metrics(bce_probs, jax.nn.sigmoid(out), multi, w)
    assert float(a) == pytest.approx(float(b), rel=1e-5) and ma.tolist() == mb.tolist()
    # padding (weight 0) counts for nothing
    _, mp = engine.loss_and_metrics(ce, out, y, jnp.asarray([1.0, 0.0]))
    assert mp.tolist()[3] == 1.0


def test_final_softmax_is_not_applied_twice() -> None:
    net = cnndsl.load(DIGITS)
    task = engine.make_task(net.ir, TrainConfig())
    assert task.logits and task.final is not None and task.final.op == "softmax"
    assert "not applied twice" in task.explain()
    assert not engine.make_task(net.ir, TrainConfig(loss="mse")).logits  # mse sees the softmax output
    with pytest.raises(ArgumentError, match="bce.*ends with `softmax`"):
        engine.make_task(net.ir, TrainConfig(loss="bce"))


def test_schedules() -> None:
    lr = lambda **kw: engine.make_schedule(dataclasses.replace(TrainConfig(lr=1.0, epochs=10), **kw), 10)
    step = lr(schedule="step", schedule_args=(("every", 2.0), ("gamma", 0.5)))
    assert [float(step(s)) for s in (0, 19, 20, 40)] == [1.0, 1.0, 0.5, 0.25]
    cos = lr(schedule="cosine", warmup=10)
    assert [round(float(cos(s)), 4) for s in (0, 4, 9, 10, 55, 100)] == [0.1, 0.5, 1.0, 1.0, 0.5, 0.0]
    assert float(lr()(77)) == 1.0


def test_adamw_decays_kernels_only_and_frozen_leaves_have_no_state() -> None:
    net = cnndsl.loads("input 1@8x8\nconv 4@3x3 -> bn -> relu -> flatten -> dense 3 -> prelu")
    params = net.init(jax.random.key(0))["params"]
    mask = engine.decay_mask(params)
    assert mask["conv1"]["kernel"] and mask["dense1"]["kernel"]
    assert not (mask["conv1"]["bias"] or mask["bn1"]["scale"] or mask["bn1"]["bias"] or mask["prelu1"]["slope"])
    frozen = cnndsl.training.transfer.freeze_mask(params, ["conv1", "bn1"])
    tx, _ = engine.make_optimizer(TrainConfig(optimizer="adamw"), frozen, 10)
    state = tx.init(params)
    moments = [x for x in jax.tree.leaves(state) if x.dtype == jnp.float32]  # not the int step counts
    trainable = [p for p, f in zip(jax.tree.leaves(params), jax.tree.leaves(frozen), strict=True) if not f]
    assert len(moments) == 2 * len(trainable)  # mu and nu for trainable leaves, nothing for frozen ones
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params)
    assert not jnp.any(updates["conv1"]["kernel"]) and not jnp.any(updates["bn1"]["scale"])
    assert jnp.all(updates["dense1"]["kernel"] != 0)


def test_frozen_batchnorm_runs_in_inference_mode() -> None:
    # Keras semantics: a frozen layer computes in training what it computes at test time.
    net = cnndsl.loads("input 1@8x8\nconv 4@3x3 -> bn -> relu -> flatten -> dense 3 -> softmax")
    variables = net.init(jax.random.key(0))
    params = variables["params"]
    stats = jax.tree.map(lambda v: v + 0.5, variables["batch_stats"])  # not the identity statistics
    task = engine.make_task(net.ir, TrainConfig())
    x = jax.random.normal(jax.random.key(1), (8, 8, 8, 1))
    y = jnp.arange(8) % 3
    placement = engine.Placement(1)

    def run(freeze: list[str]) -> tuple[dict, jax.Array]:
        frozen = cnndsl.training.transfer.freeze_mask(params, freeze)
        tx, _ = engine.make_optimizer(TrainConfig(optimizer="sgd", lr=0.1), frozen, 10)
        step = engine.make_train_step(net.ir, task, tx, frozen, placement)
        state = engine.new_state({"params": params, "batch_stats": stats}, tx)
        state = jax.tree.map(jnp.copy, state)  # the step donates its state
        out = step(state, jax.random.key(2), variables.get("fixed", {}), x, y)
        return out["batch_stats"], out["metrics"]

    kept, frozen_metrics = run(["conv1", "bn1"])
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), kept, stats))
    moved, live_metrics = run(["conv1"])  # bn1 trains: batch statistics, running averages move
    assert not jnp.allclose(moved["bn1"]["mean"], stats["bn1"]["mean"])
    # The frozen run's loss is the inference-mode loss of the same weights.
    logits, _ = cnndsl.backends.jax.model.forward(net.ir, {**variables, "batch_stats": stats}, x, logits=True)
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()
    assert float(frozen_metrics[0]) == pytest.approx(float(expected), rel=1e-5)
    assert float(live_metrics[0]) != pytest.approx(float(expected), rel=1e-3)


# --- the loop -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> cnndsl.training.TrainResult:
    return train(DIGITS, out=tmp_path_factory.mktemp("digits") / "run", overrides={"epochs": 4}, quiet=True)


def test_training_reaches_95_percent_on_held_out_digits(digits_run: cnndsl.training.TrainResult) -> None:
    r = digits_run
    losses = [h["train_loss"] for h in r.history]
    assert losses[-1] < losses[0] / 3
    assert r.test is not None and r.test["acc"] >= 0.95, r.test
    assert r.summary["train_s"] > 0 and r.summary["images_per_s"] > 0  # measured, not thresholded
    history = [json.loads(line) for line in (r.out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    keys = {"train_loss", "train_acc", "train_top5", "val_loss", "val_acc", "val_top5", "lr", "time", "images_per_s"}
    assert keys <= history[0].keys()
    assert (r.out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"latest", "best"} <= {p.name for p in (r.out / "checkpoints").iterdir()}
    summary = json.loads((r.out / "summary.json").read_text())
    assert summary["test"]["acc"] == r.test["acc"] and summary["epochs"] == 4


def test_evaluate_and_predict_use_the_checkpoint(digits_run: cnndsl.training.TrainResult, tmp_path: Path) -> None:
    from PIL import Image

    net = cnndsl.load(DIGITS)
    ev = evaluate(net, digits_run.out, which="latest")
    assert ev.accuracy == pytest.approx(digits_run.test["acc"], abs=1e-9)  # the same weights, the same pixels
    assert ev.confusion is not None and ev.confusion.sum() == ev.examples == len(digits_run.dataset.x_test)
    assert np.trace(ev.confusion) == round(ev.accuracy * ev.examples)
    ds = cnndsl.training.data.load_dataset("digits", net.input)  # raw pixels 0..255
    paths = []
    for i in range(10):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(ds.x_test[i, :, :, 0].astype(np.uint8)).save(paths[-1])
    preds = predict(net, digits_run.out, paths, top=3)
    assert all(len(p.top) == 3 and p.top[0][2] >= p.top[1][2] for p in preds)
    assert sum(p.top[0][0] == y for p, y in zip(preds, ds.y_test[:10], strict=True)) >= 8
    assert all(0.99 < sum(q for _, _, q in p.top) <= 1.0 + 1e-6 or p.top[0][2] < 1 for p in preds)


def test_evaluate_folded_and_bfloat16(tmp_path: Path) -> None:
    """`fold` (BN folded into the conv, dropout dropped) and bfloat16 compute give the same
    evaluation as the trained network, up to rounding."""
    net = cnndsl.loads(SMALL)
    run = train(net, out=tmp_path / "run", quiet=True)
    plain = evaluate(net, run.out)
    folded = evaluate(net, run.out, fold=True)
    assert folded.examples == plain.examples
    assert folded.loss == pytest.approx(plain.loss, rel=1e-4)
    assert abs(folded.accuracy - plain.accuracy) * plain.examples <= 1  # at most one near-tie flips
    half = evaluate(net, run.out, dtype="bfloat16")
    assert half.loss == pytest.approx(plain.loss, rel=5e-2) and abs(half.accuracy - plain.accuracy) <= 0.02
    fnet, _ = net.for_inference(run.variables)
    assert {n.op for n in cnndsl.ir.layers(fnet.ir.body)}.isdisjoint({"bn", "dropout"})


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path: Path) -> None:
    net = cnndsl.loads(SMALL)
    straight = train(net, out=tmp_path / "a", quiet=True)
    first = train(net, out=tmp_path / "b", quiet=True, max_steps=55)  # stops inside epoch 2
    assert first.stopped == "max_steps" and first.step == 55
    resumed = train(net, out=tmp_path / "b", quiet=True, resume=True)
    assert resumed.step == straight.step == 80
    assert leaves_equal(straight.variables, resumed.variables)
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]
    # 1 epoch, then resume with --epochs 2 (a constant rate, so the schedule does not depend on epochs)
    one = train(net, out=tmp_path / "c", quiet=True, overrides={"epochs": 1, "schedule": "constant"})
    two = train(net, out=tmp_path / "c", quiet=True, resume=True, overrides={"epochs": 2})
    whole = train(net, out=tmp_path / "d", quiet=True, overrides={"schedule": "constant"})
    assert one.epoch == 1 and two.epoch == 2
    assert leaves_equal(whole.variables, two.variables)


@pytest.mark.skipif(jax.device_count() < 4, reason="needs 4 devices (tests/conftest.py asks for 4 CPU devices)")
def test_four_devices_match_one(tmp_path: Path) -> None:
    net = cnndsl.loads(SMALL)
    one = train(net, out=tmp_path / "one", quiet=True)
    four = train(net, out=tmp_path / "four", quiet=True, devices=4)
    assert four.summary["devices"] == 4
    for key in ("train_loss", "val_loss", "val_acc"):
        np.testing.assert_allclose([h[key] for h in four.history], [h[key] for h in one.history], rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(one.variables), jax.tree.leaves(four.variables), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ArgumentError, match="does not split evenly over 3 devices"):
        train(net, out=tmp_path / "three", quiet=True, devices=3, overrides={"batch": 32})


@pytest.mark.slow  # over 10 s on 2 cores
def test_remat_autotune_and_bfloat16_change_how_not_what(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`remat` and autotuned lowerings train to the same weights (float tolerance); bfloat16
    compute trains too. (Remat applies per block instance, hence the block.)"""
    monkeypatch.setenv("CNNDSL_CACHE_DIR", str(tmp_path / "cache"))
    text = SMALL.replace("input 1@8x8\n", "input 1@8x8\nblock res(c) { residual { conv c@3x3 p1 -> relu } }\n")
    net = cnndsl.loads(text.replace("conv 8@3x3 p1 nobias -> bn -> relu", "conv 8@3x3 p1 -> res(8)"))
    steps = {"max_steps": 6}
    base = train(net, out=tmp_path / "a", quiet=True, **steps)
    for name, how in (("r", {"remat": True}), ("t", {"autotune": True})):
        other = train(net, out=tmp_path / name, quiet=True, **steps, **how)
        for a, b in zip(jax.tree.leaves(base.variables), jax.tree.leaves(other.variables), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4, err_msg=name)
    assert (tmp_path / "cache" / "autotune.json").is_file()
    bf = train(net, out=tmp_path / "bf", quiet=True, dtype="bfloat16", overrides={"epochs": 1})
    assert np.isfinite(bf.history[0]["train_loss"])
    with pytest.raises(ArgumentError, match="unknown dtype"):
        train(net, out=tmp_path / "x", quiet=True, dtype="float8")


def test_max_time_stops_after_one_step_and_saves(tmp_path: Path) -> None:
    net = cnndsl.loads(SMALL)
    r = train(net, out=tmp_path / "t", quiet=True, max_time=0)
    assert r.stopped == "max_time" and r.step == 1 and r.test is None
    info = cnndsl.training.checkpoint.checkpoint_info(tmp_path / "t" / "checkpoints")
    assert (info.step, info.meta["epoch"], info.meta["batch"]) == (1, 0, 1)
    assert not json.loads((tmp_path / "t" / "history.jsonl").read_text())["complete"]
    with pytest.raises(ArgumentError, match="already holds a training run"):
        train(net, out=tmp_path / "t", quiet=True)
    again = train(net, out=tmp_path / "t", quiet=True, overwrite=True, max_steps=2)  # the old run is discarded
    assert again.step == 2
    assert sorted(p.name for p in (tmp_path / "t" / "checkpoints").iterdir()) == ["latest", "step-00000002"]


def test_mse_and_bce_train(tmp_path: Path) -> None:
    base = SMALL.replace("-> dropout 0.2 ", "")
    fast = {"epochs": 2, "optimizer": "adam(lr=0.01)"}
    mse = train(cnndsl.loads(base), out=tmp_path / "m", quiet=True, overrides={"loss": "mse", **fast})
    losses = [h["train_loss"] for h in mse.history]
    assert 0.45 > losses[0] > losses[1]  # ½Σ(t - softmax)² is 0.45 for a uniform output over 10 classes
    assert mse.test["acc"] > 0.4
    sigmoid = cnndsl.loads(base.replace("-> softmax", "-> sigmoid"))
    bce = train(sigmoid, out=tmp_path / "b", quiet=True, overrides={"loss": "bce", **fast})
    assert bce.history[1]["train_loss"] < bce.history[0]["train_loss"] and bce.test["acc"] > 0.4


# --- transfer -----------------------------------------------------------------------------------
CONV = "input 1@8x8\nconv 32@3x3 p1 -> relu -> maxpool 2 -> conv 64@3x3 p1 -> relu -> maxpool 2 -> flatten\n"
SOURCE = (
    "network Digits04\n" + CONV + "-> dense 5 -> softmax\n"
    "train { classes = (0, 1, 2, 3, 4) epochs = 10 batch = 32 optimizer = adam(lr=0.003) schedule = cosine augment = crop(pad=1) }"
)
# The new head: `layernorm` + `dense 5 as head` exist only here. Normalising the frozen features
# lets a fresh linear head train in a few steps (as in linear probing); without it the head of
# the transferred network did not beat scratch training within this budget.
TARGET = "network Digits59\n" + CONV + "-> layernorm -> dense 5 as head -> softmax"


@pytest.mark.slow  # over 10 s on 2 cores
def test_transfer_with_frozen_features_beats_scratch(tmp_path: Path) -> None:
    source = train(cnndsl.loads(SOURCE), out=tmp_path / "src", quiet=True, plot=False)
    assert source.test["acc"] > 0.97
    digits = cnndsl.training.data.load_dataset("digits", cnndsl.loads(TARGET).input, normalize="standardize")
    five_nine = cnndsl.training.data.select_classes(digits, range(5, 10))
    few = np.concatenate([np.flatnonzero(five_nine.y_train == c)[:10] for c in range(5)])  # 10 per class
    ds = dataclasses.replace(five_nine, x_train=five_nine.x_train[few], y_train=five_nine.y_train[few])
    target = cnndsl.loads(TARGET)
    budget = {"epochs": 2, "batch": 5, "optimizer": "adam(lr=0.01)"}  # 20 steps on 50 images
    margins = []
    for seed in (0, 1):
        run = {**budget, "seed": seed}
        moved = train(target, out=tmp_path / f"t{seed}", quiet=True, plot=False, dataset=ds,
                      overrides={**run, "init": str(tmp_path / "src"), "freeze": "conv1, conv2"})  # fmt: skip
        scratch = train(target, out=tmp_path / f"s{seed}", quiet=True, plot=False, dataset=ds, overrides=run)
        margins.append(moved.test["acc"] - scratch.test["acc"])
        assert moved.test["acc"] > scratch.test["acc"], (seed, moved.test, scratch.test)
    assert np.mean(margins) > 0.05, margins
    report = moved.transfer
    assert report is not None and report.loaded == ["conv1", "conv2"]
    assert set(report.missing) == {"layernorm1", "head"} and report.extra == ["dense1"]
    src_params = cnndsl.training.load_weights(cnndsl.loads(SOURCE), tmp_path / "src")[0]["params"]
    for layer in ("conv1", "conv2"):  # frozen: bit for bit the source's weights after training
        assert leaves_equal(moved.variables["params"][layer], src_params[layer])


# --- bad inputs ---------------------------------------------------------------------------------
def test_data_mistakes_give_clear_errors(tmp_path: Path) -> None:
    spec = "input 1@8x8\nconv 4@3x3 -> relu -> flatten -> dense 10 -> softmax\ntrain {{\n  data = {data}\n}}\n"
    with pytest.raises(DataError) as e:
        train(cnndsl.loads(spec.format(data='"no/such/folder"'), "n.cnn"), out=tmp_path / "x", quiet=True)
    assert e.value.render().startswith("n.cnn:4:3: error: no data set `no/such/folder`")
    with pytest.raises(DataError, match=r"are 1@8x8, but the network's input is 1@7x7") as e:
        train(cnndsl.loads("input 1@7x7\nflatten -> dense 10"), out=tmp_path / "x", quiet=True)
    assert "change the input line to `input 1@8x8`" in str(e.value)
    with pytest.raises(DataError, match="training labels go up to 9, but the network's output has only 5 units") as e:
        train(cnndsl.loads("input 1@8x8\nflatten -> dense 5"), out=tmp_path / "x", quiet=True)
    assert "dense 10" in str(e.value)
    npz = tmp_path / "multi.npz"
    x = np.zeros((20, 8, 8), np.uint8)
    np.savez(npz, x=x, y=np.eye(10, dtype=np.int32)[np.arange(20) % 10])
    with pytest.raises(ArgumentError, match="multi-label targets, which need loss = bce"):
        train(
            cnndsl.loads("input 1@8x8\nflatten -> dense 10"),
            out=tmp_path / "x",
            quiet=True,
            overrides={"data": str(npz)},
        )
    with pytest.raises(ArgumentError, match="augmentation .* needs images"):
        train(cnndsl.loads("input 64\ndense 10"), out=tmp_path / "x", quiet=True, overrides={"augment": "flip"})
    with pytest.raises(CnnNameError, match="`freeze` pattern `conv9` matches no layer") as e:
        train(
            cnndsl.loads("input 1@8x8\nconv 4@3x3 -> flatten -> dense 10\ntrain { freeze = conv9 }", "f.cnn"),
            out=tmp_path / "x",
            quiet=True,
        )
    assert e.value.render().startswith("f.cnn:3:9:") and "did you mean `conv1`?" in str(e.value)
    with pytest.raises(DataError, match="nothing to resume"):
        train(cnndsl.loads(SMALL), out=tmp_path / "empty", quiet=True, resume=True)


def test_weights_of_another_spec_are_refused(digits_run: cnndsl.training.TrainResult) -> None:
    other = cnndsl.loads("input 1@8x8\nconv 16@3x3 p1 -> relu -> flatten -> dense 10 -> softmax")
    with pytest.raises(DataError, match="do not fit") as e:
        evaluate(other, digits_run.out)
    assert "conv2: extra in source" in str(e.value) or "shape mismatch" in str(e.value)
    assert isinstance(e.value, CnnError)
