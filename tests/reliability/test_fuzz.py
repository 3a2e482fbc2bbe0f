"""Garbage in, a `CnnError` out: random bytes, random text, token soup and mutated examples
either compile or raise `cnndsl.CnnError` (never another exception), and every message
renders with a position inside the text. The CLI never shows a traceback.

`test_mutations` runs 10,000 token mutations of the example networks and the golden error
fixtures in the default run (under a minute of CPU); the longer hunt is

    CNNDSL_FUZZ_N=100000 python -m pytest tests/reliability/test_fuzz.py -k mutations

(`CNNDSL_FUZZ_SEED` picks another sequence). The hypothesis tests are derandomized (the same
examples every time) so the suite is stable; for a longer, random hunt set
`CNNDSL_FUZZ_EXAMPLES=5000`.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))
SEEDS = [p.read_text(encoding="utf-8") for p in EXAMPLES]
FIXTURES = sorted((ROOT / "tests" / "fixtures" / "errors").glob("*.cnn"))

_HUNT = os.environ.get("CNNDSL_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_HUNT or 250),
    deadline=None,
    derandomize=_HUNT is None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Tokens as the mutator sees them: arrows, comments, names (and `name(`), sizes, numbers, symbols.
TOKEN = re.compile(
    r"->|\s+|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*\(?|[0-9]+(?:x[0-9]+)+|[0-9]*\.?[0-9]+(?:e-?[0-9]+)?|.", re.DOTALL
)
# (Numbers up to 99999 only: larger ones are checked one by one in `test_pathological_inputs`.)
NUMBERS = ["0", "1", "2", "3", "7", "64", "1000", "99999", "-1", "0.5", "1.5", "1e5", "1e99", "2x2", "5x5", "0x3", "3x3x3", "1/2"]  # fmt: skip
PIECES = [
    "->", "{", "}", "|", "(", ")", "@", "=", ",", "*", "/", "-", "\n", " ", "x", "as", "same", "valid",
    "conv", "dwconv", "deconv", "maxpool", "avgpool", "dense", "flatten", "gap", "relu", "bn", "glu", "dropout",
    "residual", "project", "concat", "add", "save", "repeat", "block", "input", "network", "train", "identity",
    "s2", "p1", "g2", "d2", "nobias", "ceil", "16@3x3", "3@32x32", "b(", "skip", "=>", "→", '"', "#",
]  # fmt: skip


@st.composite
def mutated_example(draw: st.DrawFn) -> str:
    """An example with a few token edits: delete, duplicate, swap, renumber, drop an arrow, insert."""
    tokens = TOKEN.findall(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(tokens) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "number", "arrow", "insert"]))
        if op == "delete":
            del tokens[i]
        elif op == "duplicate":
            tokens.insert(i, tokens[i])
        elif op == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif op == "number":
            numbers = [k for k, t in enumerate(tokens) if t[:1].isdigit()]
            if numbers:
                tokens[draw(st.sampled_from(numbers))] = draw(st.sampled_from(NUMBERS))
        elif op == "arrow":
            arrows = [k for k, t in enumerate(tokens) if t == "->"]
            if arrows:
                tokens[draw(st.sampled_from(arrows))] = " "
        else:
            tokens.insert(i, draw(st.sampled_from(PIECES)))
        if not tokens:
            break
    return "".join(tokens)


token_soup = st.lists(st.sampled_from(PIECES + NUMBERS), max_size=40).map(" ".join)


def check(text: str) -> bool:
    """Compile `text`: success (True), or a `CnnError` whose message renders inside the text."""
    try:
        cnndsl.loads(text, "fuzz.cnn")
        return True
    except cnndsl.CnnError as e:
        rendered = e.render()
        assert rendered.strip() and e.message.strip()
        assert "Traceback" not in rendered and "Token(" not in rendered and "__ANON" not in rendered
        if e.span is not None:
            lines = text.split("\n")  # as the parser counts lines
            assert 1 <= e.span.line <= len(lines), (e.span, rendered)
            assert 1 <= e.span.column <= len(lines[e.span.line - 1]) + 1, (e.span, rendered)
            assert e.span.end_line >= e.span.line, (e.span, rendered)
            assert rendered.startswith(f"fuzz.cnn:{e.span.line}:{e.span.column}: ")
        return False


def test_the_seeds_compile() -> None:
    assert SEEDS, "no examples/*.cnn to mutate"
    for text in SEEDS:
        cnndsl.loads(text)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    check(data.decode("latin-1"))


@FUZZ
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    check(text)


@FUZZ
@given(token_soup)
def test_token_soup(text: str) -> None:
    check("input 3@32x32\n" + text)


@FUZZ
@given(mutated_example())
def test_mutated_examples(text: str) -> None:
    check(text)


# Mutations for the fast fuzzer: numbers stay small (a repeat count of 99999 over a block makes
# a valid network of a million layers, seconds to check) or go past every bound at once.
FAST_NUMBERS = [
    "0",
    "1",
    "2",
    "3",
    "7",
    "64",
    "-1",
    "0.5",
    "1e-16",
    "1e15",
    "1e16",
    "999999999999999",
    "2x2",
    "0x3",
    "1/3",
]
FAST_PIECES = [
    *PIECES,
    "\ufeff",
    "\x00",
    "\t",
    "\r\n",
    "repeat 1000000 {",
    "b(b(",
    "block b() { b() }",
    "upsample 1e15",
]


def _fast_seeds() -> tuple[list[str], list[str]]:
    """Examples that compile in a few ms, and every golden error fixture (realistic mistakes)."""
    return [t for t in SEEDS if len(t) < 1000], [p.read_bytes().decode("utf-8", "replace") for p in FIXTURES]


def mutate(rng: random.Random, text: str) -> str:
    """1-4 token edits: delete, duplicate, swap, renumber, drop an arrow, insert a piece."""
    tokens = TOKEN.findall(text) or [""]
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(tokens))
        op = rng.randrange(6)
        if op == 0 and len(tokens) > 1:
            del tokens[i]
        elif op == 1:
            tokens.insert(i, tokens[i])
        elif op == 2:
            j = rng.randrange(len(tokens))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif op == 3:
            numbers = [k for k, t in enumerate(tokens) if t[:1].isdigit()]
            if numbers:
                tokens[rng.choice(numbers)] = rng.choice(FAST_NUMBERS)
        elif op == 4:
            arrows = [k for k, t in enumerate(tokens) if t == "->"]
            if arrows:
                tokens[rng.choice(arrows)] = " "
        else:
            tokens.insert(i, rng.choice(FAST_PIECES))
    return "".join(tokens)


def test_mutations() -> None:
    """`CNNDSL_FUZZ_N` (10,000 by default) mutated specs: each compiles or raises a located
    `CnnError`; the default count takes under a minute of CPU."""
    n = int(os.environ.get("CNNDSL_FUZZ_N", "10000"))
    rng = random.Random(int(os.environ.get("CNNDSL_FUZZ_SEED", "9")))
    examples, mistakes = _fast_seeds()
    assert len(examples) >= 10 and len(mistakes) >= 30
    start, compiled = time.process_time(), 0
    for k in range(n):
        text = mutate(rng, rng.choice(examples if rng.random() < 0.7 else mistakes))
        try:
            compiled += check(text)
        except AssertionError as e:
            raise AssertionError(f"mutation {k}: {text!r}") from e
    took = time.process_time() - start
    print(f"{n} mutations in {took:.1f} s of CPU ({n / took:,.0f}/s), {compiled} compiled")
    assert 0 < compiled < n  # both paths were exercised
    if n == 10000:
        assert took < 60, f"10,000 mutations took {took:.0f} s of CPU"


@pytest.mark.parametrize(
    "text",
    [
        "input 3@8x8\nconv 1" + "+1" * 3000 + "@3\n",  # deeper than Python's stack
        "input 3@8x8\nconv " + "(" * 500 + "1" + ")" * 500 + "@3\n",
        "input 3@8x8\n" + "residual { " * 300 + "relu" + " }" * 300,
        "input 3@8x8\ndense 1e999999999\n",  # would take seconds to convert exactly
        "input 3@8x8\ndense " + "9" * 5000 + "\n",  # over Python's int-to-str limit
        "input 3@8x8\nconv 8@3x3 s" + "9" * 5000 + "\n",
        "block b(c) { relu }\ninput 3@8x8\nb(" + "*".join(["99999999"] * 40) + ")\n",
        "input 3@8x8\nrepeat 100000 { repeat 100000 { relu } }\n",  # would never finish
        "input 3@8x8\nconv 8@3x3 \x00 relu\n",
        "\ufeffinput 3@8x8\nrelu\n",
        "input 3@8x8\r\nconv 8@3x3\r\n-> relu\r\n",
    ],
    ids=[
        "long-sum",
        "deep-parens",
        "deep-residuals",
        "huge-exponent",
        "huge-int",
        "huge-short-option",
        "huge-block-arg",
        "repeat-bomb",
        "nul",
        "bom",
        "crlf",
    ],
)
def test_pathological_inputs(text: str) -> None:
    check(text)


@pytest.mark.parametrize(
    "text",
    [
        "input 3@8x8\nadaptiveavgpool 999999999\n",
        "input 3@8x8\nupsample 999999999 -> conv 8@3x3 -> gap\n",
        "input 3@999999999x999999999\nconv 8@3x3 -> maxpool 2 -> flatten -> dense 999999999\n",
    ],
    ids=["adaptive-pool-bomb", "upsample-bomb", "huge-input"],
)
def test_huge_sizes_stay_cheap(text: str, tmp_path: Path) -> None:
    """Shapes are numbers: a huge size must not make the compiler build anything that big."""
    (tmp_path / "big.cnn").write_text(text, encoding="utf-8")
    limit = "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
    run = "from cnndsl.cli import main; sys.exit(main(['compile', '--color', 'never', 'big.cnn']))"
    try:
        r = subprocess.run(
            [sys.executable, "-c", limit + run], check=False, capture_output=True, text=True, cwd=tmp_path, timeout=15
        )
    except subprocess.TimeoutExpired:
        pytest.fail("compiling took over 15 s")
    assert r.returncode in (0, 2), r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr[-2000:]


def test_cli_never_shows_a_traceback(tmp_path: Path) -> None:
    """Bad files of every kind exit 2 with a diagnostic per file on stderr."""
    bad = {
        "garbage.cnn": "\x00\x01 }{ -> ->",
        "shape.cnn": "input 1@4x4\nconv 6@5x5\n",
        "empty.cnn": "",
        "deep.cnn": "input 3@8x8\nconv 1" + "+1" * 3000 + "@3\n",
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "latin1.cnn").write_bytes(b"input 1@28x28\nconv 6@5x5 \xe9\n")
    files = [*bad, "latin1.cnn", "missing.cnn"]
    r = subprocess.run(
        [sys.executable, "-m", "cnndsl", "compile", "--color", "never", *files],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "CNNDSL_DEBUG": ""},
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert r.stderr.count("error: ") == len(files), r.stderr


@settings(FUZZ, max_examples=min(FUZZ.max_examples, 60))
@given(text=mutated_example())
def test_cli_exit_status(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    """In-process: `cnndsl compile` returns 0 or 2, never 70 (an internal error)."""
    path = tmp_path_factory.mktemp("cli") / "m.cnn"
    path.write_text(text, encoding="utf-8")
    assert main(["compile", "--color", "never", str(path)]) in (0, 2)
