"""Registry-driven ONNX tests: every op has an emitter or is declared unsupported, and each
emitter computes what the JAX lowering computes on the op's `example`.

The ops come from the registry (`cnndsl.ops.REGISTRY`); nothing here lists them.
"""

from __future__ import annotations

import pytest

import cnndsl
from cnndsl.backends.onnx import EMITTERS, MERGE_OPS, UNSUPPORTED, UnsupportedError
from cnndsl.ops import MERGES, REGISTRY

from .parity import TOLERANCE, compare

OPS = sorted({op.name for op in REGISTRY.values()})
# Inputs tried in turn for an op's example; the first one it accepts is its test input.
# (Even depth for `glu`, 3 channels for `grayscale`, a flat vector for `dense`; 1-D and 3-D.)
CANDIDATE_INPUTS = ("4@11x9", "3@11x9", "4@13", "4@7x6x5", "6")


def _specs(op: str) -> list[str]:
    usage = REGISTRY[op].example or op
    out = []
    for shape in CANDIDATE_INPUTS:
        text = f"network Example\ninput {shape}\n{usage}"
        try:
            cnndsl.loads(text)
        except cnndsl.CnnError:
            continue
        out.append(text)
    return out


def test_every_op_has_an_emitter_or_is_declared_unsupported():
    missing = [op for op in OPS if op not in EMITTERS and op not in UNSUPPORTED]
    both = [op for op in OPS if op in EMITTERS and op in UNSUPPORTED]
    unknown = sorted((set(EMITTERS) | set(UNSUPPORTED)) - set(REGISTRY))
    assert not missing, f"ops with no ONNX emitter: add them to backends/onnx/emitters.py or UNSUPPORTED: {missing}"
    assert not both, f"ops both emitted and declared unsupported: {both}"
    assert not unknown, f"the ONNX tables name ops the registry does not have: {unknown}"


def test_every_merge_kind_has_an_onnx_operator():
    assert sorted(MERGES) == sorted(MERGE_OPS)


def test_every_op_example_has_a_test_input():
    assert [op for op in OPS if not _specs(op)] == []


@pytest.mark.parametrize("op", [op for op in OPS if op in EMITTERS])
def test_op_example_matches_jax(op):
    text = _specs(op)[0]
    diff, model = compare(cnndsl.loads(text))
    assert diff <= TOLERANCE, f"{text!r}: ONNX differs from JAX by {diff:.2e} (relative)"
    names = {n.name for n in model.graph.node}
    layer = cnndsl.loads(text).layers()[0]
    assert "/".join(layer.path) in names  # the layer's node is named by its path


@pytest.mark.slow
@pytest.mark.parametrize("op", [op for op in OPS if op in EMITTERS])
def test_op_example_matches_jax_on_every_input_rank(op):
    for text in _specs(op):
        diff, _ = compare(cnndsl.loads(text))
        assert diff <= TOLERANCE, f"{text!r}: ONNX differs from JAX by {diff:.2e} (relative)"


# Argument paths an example does not reach (padding splits, ceil overhangs, modes, kinds).
VARIANTS = (
    "input 3@12x10\nconv 5@3x2 s2 same d1 g1",
    "input 4@12x10\nconv 6@3x3 s2 p2 d2 g2 nobias",
    "input 3@9x7\ndeconv 4@3x2 s2 p1 outpad=1",
    "input 3@9x7\ndeconv 4@3 s3 nobias",
    "input 3@11x8\navgpool 3 s2 p1 ceil",
    "input 3@10x7\navgpool 2x3 s3x2 ceil",
    "input 3@11x8\nmaxpool 3 s2 p1 ceil",
    "input 3@11x8\nminpool 2 s2 ceil",
    "input 3@11x8\nsumpool 3 s2 p1 ceil",
    "input 3@10x7\nadaptiveavgpool 4x3",
    "input 3@5x4\nadaptivemaxpool 7x6",
    "input 3@11x9\nfracmaxpool 1.5 overlap offset=0.25",
    "input 3@11x9\npad 2x1 reflect",
    "input 3@11x9\npad 1 edge",
    "input 3@11x9\nupsample 2x3",
    "input 3@11x9\nfilter sobel",
    "input 3@11x9\nfilter laplacian valid",
    "input 3@11x9\nfilter sharpen p2",
    "input 2@11x9\nfilter blur 4x3",
    "input 2@11x9\nfilter gabor 7 theta=30 sigma=2 lambda=4 psi=45",
    "input 2@11x9\nfilter kernel=((1, 2), (3, 4), (5, 6)) scale=0.5 p1",
    "input 3@11x9\nscale 1/127.5 offset=-1 -> normalize mean=0.5",
    "input 3@11x9\nnormalize std=(0.2, 0.3, 0.4)",
    "input 3@6x5\nflatten -> dense 4 nobias -> logsoftmax",
    "input 3@6x5\ngelu tanh -> gelu erf",
)


@pytest.mark.parametrize("text", VARIANTS)
def test_argument_variants_match_jax(text):
    diff, _ = compare(cnndsl.loads(text))
    assert diff <= TOLERANCE, f"{text!r}: ONNX differs from JAX by {diff:.2e} (relative)"


def test_an_unsupported_layer_is_a_located_error_naming_it(monkeypatch):
    net = cnndsl.loads(
        "network Blocky\ninput 3@8x8\nblock b(c) { conv c@3x3 p1 -> relu }\nb(4) -> b(4) -> gap", "blocky.cnn"
    )
    monkeypatch.delitem(EMITTERS, "relu")
    monkeypatch.setitem(UNSUPPORTED, "relu", "it is only here for this test")
    with pytest.raises(UnsupportedError) as err:
        net.to_onnx(net.init(__import__("jax").random.key(0)))
    text = err.value.render()
    assert isinstance(err.value, cnndsl.CnnError)
    assert text.startswith("blocky.cnn:3:31: error: `relu` (b1.relu1) cannot be exported to ONNX")
    assert "it is only here for this test" in text
    assert "in `b(4)` at 4:1" in text and "also `relu` (b2.relu1) at 3:31 in `b(4)` at 4:9" in text
