"""The one binder (`syntax/binder.py`) and the one set of value kinds (`syntax/values.py`):
layers, block calls and `train {}` calls match, refuse and convert arguments the same way."""

from __future__ import annotations

import pytest

from cnndsl.compiler import compile_text
from cnndsl.errors import ArgumentError, CnnError, CnnNameError
from cnndsl.syntax.parse import parse
from cnndsl.syntax.values import BOOLEANS
from cnndsl.training import apply_overrides, settings_to_config

WORDS = ("true", "false", "yes", "no", "on", "off", "True", "FALSE", "1", "0")


def _layer_accepts(word: str) -> bool:
    try:
        compile_text(f"input 3@8x8\nconv 4@3x3 bias={word}")
    except CnnError as e:
        assert "`true` or `false`" in e.message, e.message
        return False
    return True


def _setting_accepts(word: str) -> bool:
    try:
        settings_to_config(parse(f"train {{ grayscale = {word} }}").train)
    except CnnError as e:
        assert "`true` or `false`" in e.message, e.message
        return False
    return True


@pytest.mark.parametrize("word", WORDS)
def test_a_layer_option_and_a_train_setting_take_the_same_boolean_words(word: str) -> None:
    accepted = word in BOOLEANS
    assert _layer_accepts(word) is accepted
    assert _setting_accepts(word) is accepted
    assert set(BOOLEANS) == {"true", "false"}  # as docs/language.md and docs/training.md say


def test_a_train_call_takes_the_same_boolean_words() -> None:
    cfg = settings_to_config(parse("train { optimizer = sgd(lr=0.1, momentum=0.9, nesterov=true) }").train)
    assert dict(cfg.opt_args)["nesterov"] is True
    with pytest.raises(ArgumentError, match="`optimizer` is `true` or `false`, got the name `yes`"):
        settings_to_config(parse("train { optimizer = sgd(momentum=0.9, nesterov=yes) }").train)
    assert not _setting_accepts('"true"')  # a string is not a boolean (a layer cannot take one at all)
    assert apply_overrides(cfg, {"grayscale": True}).grayscale is True
    with pytest.raises(ArgumentError, match="--grayscale: `grayscale` is `true` or `false`"):
        apply_overrides(cfg, {"grayscale": "on"})


def _train_error(text: str) -> CnnError:
    with pytest.raises(CnnError) as e:
        settings_to_config(parse(f"train {{ {text} }}").train)
    return e.value


def _net_error(text: str) -> CnnError:
    with pytest.raises(CnnError) as e:
        compile_text(text)
    return e.value


BLOCK = "block b(c, s=1) {\n  conv c@3x3 stride=s\n}\ninput 3@8x8\n"


@pytest.mark.parametrize(
    ("layer", "block", "train"),
    [
        # a keyword given twice: the same words, and a layer or block keyword's first place
        ("conv 4@3x3 s1 stride=2", "b(4, s=1, s=2)", "optimizer = sgd(lr=0.1, lr=0.2)"),
        # a positional argument and the same one by name
        ("dropout 0.1 rate=0.2", "b(4, c=4)", "optimizer = sgd(0.1, lr=0.2)"),
    ],
)
def test_an_argument_given_twice_is_one_message_everywhere(layer: str, block: str, train: str) -> None:
    errors = [_net_error(f"input 3@8x8\n{layer}"), _net_error(BLOCK + block), _train_error(train)]
    for e in errors:
        assert isinstance(e, ArgumentError)
        assert e.message.endswith(("to `conv`", "to `dropout`", "to `b`", "to `sgd`")), e.message
        assert " is given twice to " in e.message
        assert e.span is not None and e.span.line > 0


def test_unknown_keywords_get_did_you_mean_at_every_site() -> None:
    layer = _net_error("input 3@8x8\nconv 4@3x3 strid=2")
    block = _net_error(BLOCK + "b(4, ss=2)")
    train = _train_error("optimizer = sgd(lr=0.1, momentom=0.9)")
    assert (layer.message, block.message, train.message) == (
        "`conv` has no option `strid`",
        "`b` has no parameter `ss`",
        "`sgd` has no argument `momentom`",
    )
    assert all(isinstance(e, CnnNameError) for e in (layer, block, train))
    assert "`stride`" in layer.hints[0] and "`s`" in block.hints[0] and "`momentum`" in train.hints[0]


def test_too_many_arguments_to_a_call() -> None:
    block = _net_error(BLOCK + "b(4, 1, 2)")
    train = _train_error("schedule = cosine(0.1, 0.2)")
    assert block.message == "`b` takes 2 arguments, got 3"
    assert "is defined at 1:1" in block.notes[0]
    assert train.message == "`cosine` takes 1 argument, got 2"


def test_missing_arguments_name_the_parameter() -> None:
    assert _net_error(BLOCK + "b()").message == "`b` needs a value for `c`"
    e = _train_error("schedule = step(gamma=0.5)")
    assert (e.message, e.hints) == ("`step` needs `every=`", ["e.g. `step(every=10)`"])
    assert _net_error("input 3@8x8\nconv").message.startswith("`conv` needs ")


def test_train_call_values_are_converted_by_their_kinds() -> None:
    cfg = settings_to_config(parse("train { schedule = step(2, gamma=0.5) augment = crop(pad=2) }").train)
    assert (cfg.schedule, dict(cfg.schedule_args), cfg.crop) == ("step", {"every": 2.0, "gamma": 0.5}, 2)
    assert _train_error("schedule = step(every=0)").message == "`schedule`'s `every=` must be at least 1, got 0"


def test_messages_print_expressions_as_the_formatter_does() -> None:
    """One printer (`fmt.expr`): a message's expression keeps the parentheses it needs."""
    e = _net_error("block b(c) {\n  conv c/(c+1)@3x3\n}\ninput 3@8x8\nb(2)")
    assert e.message == "the filter count must be a whole number, got 0.666667 (c/(c + 1) = 2/3)"


def test_functions_in_expressions_are_bound_by_the_same_binder() -> None:
    unknown = _net_error("input 3@8x8\nconv make_divisible(8, divisr=2)@3x3")
    assert unknown.message == "`make_divisible` has no argument `divisr`"
    assert "`divisor`" in unknown.hints[0]
    extra = _net_error("input 3@8x8\nconv make_divisible(8, 2, 1, 4)@3x3")
    assert extra.message == "`make_divisible` takes 3 arguments, got 4"
    twice = _net_error("input 3@8x8\nconv make_divisible(8, 2, divisor=4)@3x3")
    assert twice.message == "`divisor` is given twice to `make_divisible`"
    assert (
        compile_text("input 3@8x8\nconv make_divisible(9, divisor=4)@3x3").output.depth == 12
    )  # 8 is over 10% below 9
