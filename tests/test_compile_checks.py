"""`cnndsl compile` checks the whole file: the `train { ... }` section is read by the same
parser and validator as `cnndsl train` (issue 13, item 1), without importing JAX."""

from __future__ import annotations

import pytest

from cnndsl.compiler import compile_text
from cnndsl.errors import ArgumentError, CnnNameError, CnnWarning
from cnndsl.training.config import SETTINGS

NET = "input 1@28x28\nconv 6@5x5 -> relu -> maxpool 2 -> flatten -> dense 10\n"


def compile_train(body: str):
    return compile_text(NET + "train {\n" + body + "\n}\n", "t.cnn")


def test_unknown_setting_is_an_error_with_did_you_mean() -> None:
    with pytest.raises(CnnNameError) as e:
        compile_train("  epoch = 5")
    assert e.value.message == "unknown train setting `epoch`"
    assert e.value.hints == ["did you mean `epochs`?"]
    assert e.value.span is not None and (e.value.span.line, e.value.span.column) == (4, 3)
    assert e.value.source is not None and e.value.source.path == "t.cnn"


@pytest.mark.parametrize(
    ("body", "cls", "words"),
    [
        ("  batch = 0", ArgumentError, "`batch` must be at least 1, got 0"),
        ("  optimizer = adam(learning_rate=0.1)", CnnNameError, "`adam` has no argument `learning_rate`"),
        ("  schedule = cosin", CnnNameError, "unknown schedule `cosin`"),
        ("  epochs = 2\n  epochs = 3", ArgumentError, "`epochs` is set twice"),
        ('  data = "mnsit:data/mnist"', CnnNameError, "unknown data set `mnsit`"),
        ('  data = "digits:x"', ArgumentError, "`digits` takes no folder"),
        ('  data = "x.csv"', ArgumentError, "`.csv` files are not read as data"),
        ('  data = ""', ArgumentError, "`data` is empty"),
    ],
)
def test_values_are_checked(body: str, cls: type, words: str) -> None:
    with pytest.raises(cls) as e:
        compile_train(body)
    assert words in e.value.message


@pytest.mark.parametrize("data", ["digits", "mnist:data/mnist", "fashion-mnist:x", "a.npz", "C:/data", "my:folder"])
def test_data_forms_that_may_load_compile(data: str) -> None:
    """Only the form is checked: the folder may exist only where training runs."""
    assert compile_train(f'  data = "{data}"').warnings == ()


def test_freeze_pattern_matching_no_layer_is_a_located_warning() -> None:
    net = compile_train('  freeze = "conv*, dense1.bias, conv9, relu*"')
    assert [type(w) for w in net.warnings] == [CnnWarning, CnnWarning]
    nine, relu = net.warnings
    assert nine.message == "`freeze` pattern `conv9` matches no layer with parameters"
    assert nine.hints == ["did you mean `conv1`?"] and nine.span is not None and nine.span.line == 4
    assert relu.notes == ["`relu1` has no trainable parameters"]


def test_every_setting_of_the_table_is_accepted_by_compile() -> None:
    """The check is the training config's own reader: each documented setting compiles."""
    values = {
        "data": "digits", "classes": "(0, 1)", "val": "0.2", "normalize": "scale", "grayscale": "false",
        "resize": "true", "loss": "mse", "label_smoothing": "0.1", "optimizer": "sgd(lr=0.1, momentum=0.9)",
        "lr": "0.01", "schedule": "cosine", "warmup": "10", "batch": "32", "epochs": "3", "seed": "1",
        "augment": "(crop, flip)", "freeze": "(conv1)", "init": '"runs/x"',
    }  # fmt: skip
    assert set(values) == set(SETTINGS)
    body = "\n".join(f"  {k} = {v}" for k, v in values.items() if k != "lr")
    assert compile_train(body).warnings == ()


# --- lowering overrides (issue 13, item 2): checked once, before tracing -----------------
LOWERED = "input 3@16x16\nconv 8@3x3 p1 -> relu -> conv 8@5x5 p2 -> bn -> conv 8@3x3 s2 -> gap -> dense 10"


@pytest.mark.parametrize(
    ("lowering", "cls", "message", "hint"),
    [
        ({"conv2": "winogradd"}, CnnNameError, "unknown lowering `winogradd` for `conv2`", "did you mean `winograd`?"),
        (
            {"conv9": "xla"},
            CnnNameError,
            "`lowering` names no layer `conv9`",
            "did you mean `conv3` or `conv2` or `conv1`?",
        ),
        ({"*": "bogus"}, CnnNameError, "unknown lowering `bogus` for `*`", None),
        (
            {"relu1": "winograd"},
            ArgumentError,
            "lowering `winograd` does not apply to `relu1` (`relu`): `relu` has `xla`",
            "leave `relu1` out of `lowering` for its default (`xla` here)",
        ),
        (
            {"conv2": "winograd"},
            ArgumentError,
            "lowering `winograd` cannot compute `conv2` (`conv 8@5x5 p2`, input 8@16x16): it would fall back silently",
            "choose one of those, or leave `conv2` to its default",
        ),
        ({"*": "dot", "bn1": "shift"}, ArgumentError, "lowering `shift` does not apply to `bn1`", None),
        ("xla", ArgumentError, "`lowering` is a dict {layer name: lowering}, got str", None),
    ],
)
def test_bad_lowering_overrides_are_errors(lowering, cls, message, hint) -> None:
    import jax

    import cnndsl

    net = cnndsl.loads(LOWERED)
    with pytest.raises(cls) as e:
        net.functional(jax.random.key(0), lowering=lowering)
    assert e.value.message.startswith(message)
    assert hint is None or hint in e.value.hints


def test_why_a_lowering_does_not_apply_is_said() -> None:
    import jax

    import cnndsl

    net = cnndsl.loads(LOWERED)
    with pytest.raises(ArgumentError) as e:
        net.functional(jax.random.key(0), lowering={"conv3": "winograd"})
    assert e.value.notes[0] == "`winograd` computes only: 2-D, 3x3, stride 1, dilation 1, groups 1"
    assert "`xla`" in e.value.notes[1] and "`winograd`" not in e.value.notes[1]


def test_forward_checks_before_tracing_and_good_overrides_run() -> None:
    """`forward(..., lowering=)` refuses before any layer is traced (also under `jax.jit`);
    `"*"` with a lowering some layers lack, and a named lowering that applies, run."""
    import jax
    import numpy as np

    import cnndsl
    from cnndsl.backends.jax.model import forward

    net = cnndsl.loads(LOWERED)
    v, apply = net.functional(jax.random.key(0), lowering={"*": "winograd", "conv1": "patches", "bn1": "dot"})
    x = np.zeros((1, 16, 16, 3), np.float32)
    assert apply(v, x).shape == (1, 10)
    seen = []
    with pytest.raises(CnnNameError):
        jax.jit(lambda v, x: forward(net.ir, v, x, lowering={"conv1": "xlaa"}, observe=lambda n, y: seen.append(n))[0])(
            v, x
        )
    assert seen == []


# --- diagnostics polish (issue 13, item 5); the rest are goldens in tests/fixtures/errors --------
def test_non_breaking_space_is_named_with_a_hint() -> None:
    """Golden, inline: the caret test of test_errors_golden compares the shown line with the
    source, and a non-breaking space is shown as U+FFFD (visible) there."""
    from cnndsl.errors import CnnSyntaxError

    with pytest.raises(CnnSyntaxError) as e:
        compile_text("input 1@28x28\nconv 6@5x5\u00a0-> relu -> flatten -> dense 10\n", "nbsp.cnn")
    assert e.value.render() == (
        "nbsp.cnn:2:11: error: unexpected character U+00A0 (a non-breaking space)\n"
        "    conv 6@5x5\ufffd-> relu -> flatten -> dense 10\n"
        "              ^\n"
        "  = hint: this is a non-breaking space, often pasted from a web page or a document: type a plain space"
    )


@pytest.mark.parametrize("dash", ["\u2013", "\u2014", "\u2212"])
def test_unicode_dashes_in_an_arrow_get_the_arrow_hint(dash: str) -> None:
    from cnndsl.errors import CnnSyntaxError

    with pytest.raises(CnnSyntaxError) as e:
        compile_text(f"input 10\ndense 4 {dash}> relu\n")
    assert e.value.hints[0].startswith(f"`{dash}` is ") and "`->`" in e.value.hints[0]
    with pytest.raises(CnnSyntaxError) as e:
        compile_text(f"input 10\ndense 4 -> dense {dash}3\n")
    assert e.value.hints[0].endswith("write a plain `-`")


def test_a_missing_comma_on_the_openers_line_is_not_called_an_unclosed_paren() -> None:
    from cnndsl.errors import CnnSyntaxError

    with pytest.raises(CnnSyntaxError) as e:
        compile_train("  optimizer = sgd(lr=0.1 momentum=0.9)")
    assert "is not closed" not in e.value.message


@pytest.mark.parametrize(
    ("written", "hint"),
    [
        ("adam(learning_rate=0.1)", "write `lr=`: `learning_rate` is another library's name for it"),
        ("adam(beta_1=0.8)", "write `b1=`: `beta_1` is another library's name for it"),
        ("adamw(wd=0.01)", "write `weight_decay=`: `wd` is another library's name for it"),
        ("rmsprop(alpha=0.9)", "write `decay=`: `alpha` is another library's name for it"),
        ("adam(betas=0.9)", "write `b1=0.9, b2=0.999`: PyTorch's `betas=(b1, b2)` is two arguments here"),
    ],
)
def test_other_libraries_argument_names_get_ours(written: str, hint: str) -> None:
    with pytest.raises(CnnNameError) as e:
        compile_train(f"  optimizer = {written}")
    assert e.value.hints == [hint]


# --- every independent error in one run (issue 13, item 3) -----------------------------------
def errors_of(text: str) -> list:
    from cnndsl.errors import CnnError

    with pytest.raises(CnnError) as e:
        compile_text(text, "m.cnn")
    return [e.value, *getattr(e.value, "more", ())]


def test_independent_errors_in_layers_and_settings_are_all_reported() -> None:
    found = errors_of(
        "input 1@28x28\nconv 6@5x5 strid=2 ciel -> relu -> maxpool 2 siz=3\n-> flatten -> densee 10\n"
        "train {\n  epoch = 5\n  lr = -1\n}\n"
    )
    assert [(f.span.line, f.span.column) for f in found] == [(2, 12), (2, 20), (2, 46), (3, 15), (5, 3), (6, 8)]
    assert all(f.source is not None and f.source.path == "m.cnn" for f in found)


def test_errors_that_follow_from_an_earlier_one_are_not_repeated() -> None:
    # a mistake in a block is one place in the source: reported once, at the first call
    found = errors_of("block b(c) { conv c@3x3 strid=1 }\ninput 3@8x8\nb(4) -> b(4) -> b(8)")
    assert [f.message for f in found] == ["`conv` has no option `strid`"]
    assert found[0].notes == ["in `b(4)` called at 3:1"]
    # a missing `->` (`relu maxpool 2`) and a spaced size (`8@3 x 3`): one error each, not their echoes
    assert len(errors_of("input 1@28x28\nconv 6@5x5 -> relu\nmaxpool 2 -> flatten -> dense 10")) == 1
    assert len(errors_of("input 3@32x32\nconv 8@3 x 3")) == 1


def test_at_most_twenty_errors() -> None:
    layers = " -> ".join(f"conv 4@3x3 p1 bogus{i}=1" for i in range(30))
    assert len(errors_of(f"input 1@8x8\n{layers}")) == 20


def test_a_shape_error_comes_with_the_train_sections_errors_and_the_partial_table() -> None:
    found = errors_of("input 1@28x28\nconv 6@50x50 -> flatten -> dense 10\ntrain {\n  epoch = 5\n}\n")
    assert [type(f).__name__ for f in found] == ["ShapeError", "CnnNameError"]
    assert getattr(found[0], "partial", None) is not None


def test_json_lists_every_error(tmp_path, capsys) -> None:
    import json

    from cnndsl.cli import main

    spec = tmp_path / "m.cnn"
    spec.write_text("input 1@28x28\nconv 6@5x5 strid=2 -> densee 10\n")
    assert main(["compile", "--json", str(spec)]) == 2
    out = json.loads(capsys.readouterr().out)
    assert [e["column"] for e in out["errors"]] == [12, 23] and out["error"]["column"] == 12
