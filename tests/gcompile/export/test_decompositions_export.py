"""Export of composite ops through their decompositions: an op with no ONNX translation
(linear, layer_norm, mse_loss, cross_entropy, or one registered at run time) is written as
its primitives, runs in onnxruntime and agrees with eager; ``gcompile.export`` saves a
run-time op as its primitives, so a process that never registered it can load it."""
from __future__ import annotations

import io

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn.functional as F
from gcompile._tensor import apply_op
from ir.registry import REGISTRY, OpDef, register

COMPOSITES = ("linear", "layer_norm", "mse_loss", "cross_entropy")


@pytest.fixture
def runtime_op():
    """An op registered at run time with a decomposition and nothing else to export it."""
    name = "test_export_softsq"
    register(OpDef(name, "unary", lambda x: x * np.tanh(x), dtype_rule="same",
                   decomposition=lambda b, x: b.mul(x, b.tanh(x))))
    yield name
    REGISTRY.pop(name, None)


def _composite_model(x, w, b, t, ln_w, ln_b):
    h = F.layer_norm(F.linear(x, w, b), (w.shape[0],), ln_w, ln_b)
    return h, F.mse_loss(h, torch.zeros_like(h)), F.cross_entropy(h, t, label_smoothing=0.1), \
        F.cross_entropy(h, h.detach().softmax(1), reduction="sum")


def _inputs():
    torch.manual_seed(0)
    return (torch.randn(6, 4), torch.randn(5, 4), torch.randn(5), torch.tensor([0, 4, 1, 2, 3, 0]),
            torch.rand(5) + 0.5, torch.randn(5))


def _onnx_run(fn, args):
    onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install "
                               "'gcompile[onnx]')")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    import gcompile.onnx as gonnx
    buf = io.BytesIO()
    proto = gonnx.export(fn, args, buf)
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    return proto, sess.run(None, {n: a.numpy() for n, a in zip(names, tensors)})


def test_the_composites_have_no_translation_of_their_own():
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    import gcompile.onnx as gonnx
    for name in COMPOSITES:
        assert name not in gonnx.CONVERTERS and REGISTRY[name].decomposition is not None


def test_composites_export_as_their_primitives_and_round_trip():
    args = _inputs()
    proto, got = _onnx_run(_composite_model, args)
    kinds = {n.op_type for n in proto.graph.node}
    assert {"MatMul", "LogSoftmax", "ReduceMean"} <= kinds
    with torch.no_grad():
        want = _composite_model(*args)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == tuple(w.shape) and g.dtype == w.numpy().dtype
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-5)


def test_an_op_registered_at_run_time_exports_through_its_decomposition(runtime_op):
    x = torch.randn(3, 4)
    _, got = _onnx_run(lambda a: apply_op(runtime_op, (a,)) + 1, (x,))
    np.testing.assert_allclose(got[0], x.numpy() * np.tanh(x.numpy()) + 1, rtol=1e-5, atol=1e-6)


def test_a_declining_decomposition_is_named():
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    import gcompile.onnx as gonnx
    name = "test_export_declines"
    register(OpDef(name, "unary", lambda x: x * 2, dtype_rule="same",
                   decomposition=lambda b, x: None))
    try:
        with pytest.raises(NotImplementedError, match=rf"op '{name}'.*declines these inputs"):
            gonnx.export(lambda a: apply_op(name, (a,)), (torch.randn(2),), None)
    finally:
        REGISTRY.pop(name, None)


def test_gcompile_export_saves_a_run_time_op_as_its_primitives(runtime_op, tmp_path):
    x = torch.randn(3, 4)
    ep = torch.export(lambda a: apply_op(runtime_op, (a,)) * 2, x)
    ep.save(tmp_path / "p.gcx")
    REGISTRY.pop(runtime_op)  # as in a process that never registered it
    loaded = torch.load(tmp_path / "p.gcx")
    np.testing.assert_allclose(loaded(x).numpy(), x.numpy() * np.tanh(x.numpy()) * 2,
                               rtol=1e-5, atol=1e-6)


def test_gcompile_export_of_the_composites_round_trips(tmp_path):
    args = _inputs()
    ep = torch.export(_composite_model, *args)
    ep.save(tmp_path / "c.gcx")
    loaded = torch.load(tmp_path / "c.gcx")
    with torch.no_grad():
        want = _composite_model(*args)
    for g, w in zip(loaded(*args), want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)


def _attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True), \
        F.scaled_dot_product_attention(q, k, v, scale=0.3)


def _attention_inputs():
    torch.manual_seed(0)
    return tuple(torch.randn(2, 3, 5, 4) for _ in range(3))


def test_attention_exports_through_its_decomposition():
    """The sdpa op (ir.ops.attention) has no ONNX translation: it is written as matmul,
    the causal mask and softmax, and agrees with eager in onnxruntime."""
    args = _attention_inputs()
    proto, got = _onnx_run(_attention, args)
    kinds = {n.op_type for n in proto.graph.node}
    assert {"MatMul", "Softmax", "Where"} <= kinds
    want = _attention(*args)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-6)


def test_gcompile_export_of_attention_round_trips(tmp_path):
    args = _attention_inputs()
    ep = torch.export(_attention, *args)
    ep.save(tmp_path / "a.gcx")
    loaded = torch.load(tmp_path / "a.gcx")
    for g, w in zip(loaded(*args), _attention(*args)):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)
