"""Issue 9, section 7: integer train settings that would overflow later are refused up front.

`--seed 10^20` and `--warmup 10^15` ended in an internal OverflowError (exit 70) once JAX
saw them; a seed of 2**32 silently repeated seed 0's run. Each integer setting now has a
stated range, checked where the setting is read, with its place (file:line:col or option).
"""

from __future__ import annotations

import jax
import pytest

from cnndsl import loads
from cnndsl.errors import ArgumentError, CnnError
from cnndsl.training.config import INT32_MAX, SEED_MAX, TrainConfig, apply_overrides

SPEC = "network N\ninput 1@8x8\nflatten -> dense 10\n"


def test_seed_beyond_32_bits_would_alias_a_smaller_seed() -> None:
    # why the bound is 2**32 - 1: JAX keeps 32 bits of the seed here
    assert jax.random.key_data(jax.random.key(2**32)).tolist() == jax.random.key_data(jax.random.key(0)).tolist()


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("seed", str(2**32), f"--seed: `seed` must be from 0 to {SEED_MAX}, got 4294967296"),
        ("warmup", str(10**15), f"--warmup: `warmup` must be from 0 to {INT32_MAX}, got 1000000000000000"),
        ("epochs", str(2**31), f"--epochs: `epochs` must be from 0 to {INT32_MAX}, got 2147483648"),
        ("batch", str(2**40), f"--batch: `batch` must be from 1 to {INT32_MAX}, got 1099511627776"),
        ("schedule", "step(every=3000000000)", "--schedule: `schedule`'s `every=` must be from 1 to 2147483647"),
        ("schedule", "warmup(steps=3000000000)", "--schedule: `schedule`'s `steps=` must be from 1 to 2147483647"),
        ("augment", "crop(pad=100000)", "--augment: `augment`'s `pad=` must be from 1 to 1024, got 100000"),
        ("classes", "0,3000000000", "--classes: `classes` must be from 0 to 2147483647, got 3000000000"),
    ],
)
def test_cli_overrides_out_of_range(key: str, text: str, message: str) -> None:
    with pytest.raises(ArgumentError) as e:
        apply_overrides(TrainConfig(), {key: text})
    assert e.value.message.startswith(message)


def test_a_seed_of_10_to_the_20_is_refused_with_its_range_or_as_out_of_range() -> None:
    # The number literal's own bound (10^15) may refuse it first; either way it is located and worded.
    with pytest.raises(ArgumentError) as e:
        apply_overrides(TrainConfig(), {"seed": str(10**20)})
    msg = e.value.message
    assert msg in (
        f"--seed: `seed` must be from 0 to {SEED_MAX}, got about 1e+20",
        f"--seed: the number `{10**20}` is out of range",
    )


def test_unreadable_option_text_says_why() -> None:
    with pytest.raises(ArgumentError) as e:
        apply_overrides(TrainConfig(), {"seed": "10^20"})
    assert e.value.message.startswith("--seed: cannot read `10^20`: ")
    assert e.value.hints == ["write it as in the file's train section: N"]


def test_the_largest_valid_values_are_accepted() -> None:
    cfg = apply_overrides(TrainConfig(), {"seed": str(SEED_MAX), "warmup": str(INT32_MAX), "epochs": str(INT32_MAX)})
    assert (cfg.seed, cfg.warmup, cfg.epochs) == (SEED_MAX, INT32_MAX, INT32_MAX)


def test_file_setting_out_of_range_is_located() -> None:
    """Refused where the file is compiled (`loads` checks the train section), located there."""
    with pytest.raises(ArgumentError) as e:
        loads(SPEC + "train {\n  epochs = 1\n  warmup = 2147483648\n}\n", "n.cnn")
    err = e.value
    assert err.span is not None and (err.span.line, err.span.column) == (6, 12)
    assert str(err).startswith("n.cnn:6:12: error: `warmup` must be from 0 to 2147483647, got 2147483648")
    assert "kept in 32 bits" in err.notes[0]


def test_below_the_range_keeps_its_message() -> None:
    with pytest.raises(ArgumentError, match="`batch` must be at least 1, got 0"):
        apply_overrides(TrainConfig(), {"batch": "0"})


@pytest.mark.parametrize("option", [["--seed", str(10**20)], ["--warmup", str(10**15)]])
def test_cli_exits_2_not_70(tmp_path, capsys: pytest.CaptureFixture[str], option: list[str]) -> None:
    from cnndsl.cli import main

    spec = tmp_path / "n.cnn"
    spec.write_text(SPEC + "train {\n  data = digits\n  epochs = 1\n}\n")
    rc = main(["train", str(spec), "--out", str(tmp_path / "run"), "--quiet", *option])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"error: {option[0]}: " in err and ("must be from 0 to" in err or "out of range" in err)
    assert "internal error" not in err and "Overflow" not in err


def test_errors_are_cnn_errors_never_overflow() -> None:
    for text in ("1" + "0" * 400, "-" + "9" * 30):
        with pytest.raises(CnnError):
            apply_overrides(TrainConfig(), {"seed": text})
