"""Bounds before work in the front end (issue 9, section 5): the size of the expanded network is
worked out from the AST before anything is expanded, and nothing in parsing, expansion or the
report is quadratic.

Timings are CPU time of this process (robust to a loaded machine) with generous margins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cnndsl
from cnndsl.errors import ArgumentError
from cnndsl.passes.expand import MAX_LAYERS
from cnndsl.report import dumps, render_table, to_json

ROOT = Path(__file__).resolve().parents[2]


def nested_blocks(levels: int = 12, calls: int = 10) -> str:
    """`levels` blocks, each calling the one below `calls` times: calls**levels layers in ~1 KB."""
    lines = ["block b0() { relu }"]
    for k in range(1, levels + 1):
        lines.append(f"block b{k}() {{ " + " -> ".join([f"b{k - 1}()"] * calls) + " }")
    return "\n".join([*lines, "input 3@8x8", f"b{levels}()"]) + "\n"


def cpu(fn) -> tuple[float, object]:
    t = time.process_time()
    out = fn()
    return time.process_time() - t, out


def test_a_one_kilobyte_bomb_is_refused_at_its_call_in_under_a_second() -> None:
    text = nested_blocks()
    assert len(text) < 1200
    took, err = cpu(lambda: pytest.raises(ArgumentError, cnndsl.loads, text, "bomb.cnn"))
    assert took < 1.0, f"refusing 10^12 layers took {took:.2f} s of CPU"
    e = err.value
    assert (e.span.line, e.span.column) == (15, 1)  # the `b12()` call
    assert "`b12()` would expand to 2,111,111,111,111 layers" in e.message  # 10^12 layers + block instances
    assert f"over the limit of {MAX_LAYERS:,}" in e.message
    assert e.hints and "typo" in e.hints[0]
    assert e.render().startswith("bomb.cnn:15:1: error: ")


def test_the_bomb_stays_small_in_a_subprocess(tmp_path: Path) -> None:
    """The CLI on the bomb: exit 2 at once, little memory (it reached 1.8 GB before the bound)."""
    (tmp_path / "bomb.cnn").write_text(nested_blocks(), encoding="utf-8")
    code = (
        "import sys; from cnndsl.cli import main; rc = main(['compile', '--color', 'never', 'bomb.cnn']); "
        # VmHWM, not ru_maxrss: Linux carries the forking parent's peak (pytest's) into ru_maxrss across exec
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
        "print(hwm, file=sys.stderr); sys.exit(rc)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("bomb.cnn:15:1: error: `b12()` would expand to"), r.stderr
    assert int(r.stderr.split()[-1]) < 300_000, "peak RSS over 300 MB"  # kilobytes on Linux


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (
            "input 3@8x8\nrepeat 100000 { repeat 100000 { relu } }\n",
            (2, 8),
            "`repeat 100000` would expand to 10,000,000,000 layers",
        ),
        ("input 3@8x8\nrepeat 1000001 { relu }\n", (2, 8), "`repeat 1000001` would expand to 1,000,001 layers"),
        (
            "block b(n) { repeat n { relu } }\ninput 3@8x8\nb(10) -> b(2000000)\n",
            (3, 10),
            "`b(2000000)` would expand to 2,000,001 layers",
        ),
        (
            "block b() { repeat 600000 { relu } }\ninput 3@8x8\nb() -> b()\n",
            (3, 8),
            "the network would reach 1,200,002 layers here",
        ),
        # rounds that make nothing are not counted to the end (this never finished before)
        ("input 3@8x8\nrepeat 1000000000000000 { repeat 0 { relu } } -> relu\n", None, None),
        ("input 3@8x8\nrepeat 100000000 as i { repeat 0 { relu } } -> relu\n", None, None),
        (
            "input 3@8x8\nrepeat 100000000 as i { repeat i - i { relu } }\n",
            (2, 8),
            "would run its body 100,000,000 times",
        ),
        (
            "block b(c) { repeat c { relu } }\ninput 3@8x8\nrepeat 2000 as i { b(i) }\n",
            (3, 8),
            "`repeat 2000` would expand",
        ),
    ],
    ids=[
        "nested-repeat",
        "one-over",
        "block-argument",
        "accumulated",
        "empty-rounds",
        "empty-rounds-index",
        "rounds-index",
        "index-argument",
    ],
)
def test_the_bound_is_located_where_it_is_crossed(
    text: str, where: tuple[int, int] | None, message: str | None
) -> None:
    t0 = time.process_time()
    if message is None:
        net = cnndsl.loads(text)
        assert [n.op for n in net.layers()] == ["relu"]
    else:
        with pytest.raises(ArgumentError) as e:
            cnndsl.loads(text)
        assert (e.value.span.line, e.value.span.column) == where
        assert message in e.value.message
    assert time.process_time() - t0 < 1.0


def test_a_network_at_the_bound_still_compiles_and_errors_still_come_from_the_expander() -> None:
    """The sizer only bounds: a bad argument deep inside is reported as before, with its call site."""
    with pytest.raises(cnndsl.CnnError) as e:
        cnndsl.loads("block b(c) { conv c@3x3 }\ninput 3@8x8\nrepeat 3 { b(0) }\n")
    assert "filter count must be >= 1" in e.value.message
    assert any("called at" in n for n in e.value.notes)
    with pytest.raises(cnndsl.CnnNameError, match="calls itself"):
        cnndsl.loads("block a() { b() }\nblock b() { a() }\ninput 3@8x8\na()\n")


def test_many_parameters_are_linear() -> None:
    """The duplicate-parameter check and keyword binding were quadratic (14 s for 40,000)."""

    def spec(n: int) -> str:
        params = ", ".join(f"p{i}=1" for i in range(n))
        return f"block b({params}) {{ relu }}\ninput 3@8x8\nb(" + ", ".join(f"p{i}=2" for i in range(n)) + ")\n"

    # the least CPU time of three runs each: another process sharing the cores only adds time
    small = min(cpu(lambda: cnndsl.loads(spec(1500)))[0] for _ in range(3))
    runs = [cpu(lambda: cnndsl.loads(spec(6000))) for _ in range(3)]
    big, net = min(t for t, _ in runs), runs[0][1]
    assert [n.op for n in net.layers()] == ["relu"]
    assert big < 9 * max(small, 0.05), f"4x the parameters took {big / small:.1f}x the time (quadratic: 16x)"
    with pytest.raises(ArgumentError, match="two parameters named `p7`"):
        cnndsl.loads("block b(" + ", ".join(f"p{i}" for i in range(12000)) + ", p7) { relu }\ninput 3@8x8\nb()\n")


@pytest.mark.slow
def test_a_hundred_thousand_layers_compile_in_seconds() -> None:
    """Table and JSON of a valid 100,000-layer network (67 s before): linear throughout."""
    text = "block b(c) { conv c@3x3 p1 -> relu }\ninput 3@8x8\nrepeat 50000 { b(8) }\n"
    took, net = cpu(lambda: cnndsl.loads(text))
    table_took, table = cpu(lambda: render_table(net.ir))
    json_took, data = cpu(lambda: json.loads(dumps(to_json(net.ir))))
    assert len(net.layers()) == 100_000
    assert table.count("\n") > 150_000 and len(data["layers"]) == 150_000
    assert took + table_took < 30 and took + json_took < 30, (took, table_took, json_took)


def test_the_report_is_linear_in_the_layers() -> None:
    """Table and JSON of 2,000 then 8,000 layers: 4x the layers, at most ~6x the time."""

    def run(n: int) -> float:
        net = cnndsl.loads(f"block b(c) {{ conv c@3x3 p1 -> relu }}\ninput 3@8x8\nrepeat {n // 2} {{ b(8) }}\n")
        t, _ = cpu(lambda: (render_table(net.ir), dumps(to_json(net.ir))))
        return t

    run(400)  # warm up
    # the least CPU time of three runs each: another process sharing the cores only adds time
    small, big = min(run(2000) for _ in range(3)), min(run(8000) for _ in range(3))
    assert big < 6 * small + 0.2, f"4x the layers took {big / small:.1f}x the time"


def test_the_fast_table_is_rich_s_table() -> None:
    """The linear-time table renderer draws exactly what rich draws, plain and coloured, at
    every width the CLI fits to, for every example network."""
    from cnndsl import report

    compared = 0
    for name in ("lenet5", "resnet18", "googlenet", "textcnn", "unet"):  # flat, blocks, branches, 1-D, saves
        path = ROOT / "examples" / f"{name}.cnn"
        net = cnndsl.load(path).ir
        for depth, width, color in ((None, None, False), (1, None, True), (None, 70, False), (0, 100, True)):
            fast = report.render_table(net, depth, color=color, width=width)
            real = report._simple_table
            try:
                report._simple_table = lambda *a, **k: None  # force rich
                slow = report.render_table(net, depth, color=color, width=width)
            finally:
                report._simple_table = real
            assert fast == slow, (path.name, depth, width, color)
            compared += 1
    assert compared == 20


def test_json_is_strict_and_complete(tmp_path: Path) -> None:
    """`compile --json` is strict JSON (no NaN) with one layer record per table row."""
    path = ROOT / "examples" / "resnet18.cnn"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "cnndsl", "compile", "--json", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    data = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert data == json.loads(json.dumps(to_json(cnndsl.load(path).ir)))
