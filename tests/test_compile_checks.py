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
