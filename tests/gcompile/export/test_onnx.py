"""gcompile.onnx.export: the ONNX model runs in onnxruntime and agrees with eager."""
from __future__ import annotations

import io

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn.functional as F
from ir.registry import REGISTRY

from .models import NAMES, make

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

import gcompile.onnx as gonnx  # noqa: E402


def _run(model_bytes, *xs):
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {n: x.numpy() for n, x in zip(names, xs)})


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("name", NAMES)
def test_models_run_in_onnxruntime(name, opset, tmp_path):
    m, x = make(name)
    path = tmp_path / f"{name}.onnx"
    proto = gonnx.export(m, (x,), path, opset_version=opset)
    assert proto.opset_import[0].version == opset
    onnx.checker.check_model(onnx.load(path))
    got = _run(path.read_bytes(), x)[0]
    with torch.no_grad():
        ref = m(x).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_torch_signature_with_file_object_and_names():
    m, x = make("mlp")
    buf = io.BytesIO()
    gonnx.export(m, x, buf, input_names=["features"], output_names=["logits"])
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["features"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"features": x.numpy()})[0], m(x).numpy(),
                                   rtol=1e-5, atol=1e-6)


def _many_ops(x, y, k):
    a = torch.expm1(x * 0.1) + torch.log1p(x.abs()) + torch.atan2(x, y) + torch.log2(y.abs() + 1)
    b = torch.remainder(x, 0.7) + torch.floor_divide(x, 0.3) + x.clamp(min=-0.5, max=0.5)
    c = F.softplus(x, beta=2.0) + F.leaky_relu(x, 0.1) + F.elu(x) + F.silu(x) + x.sign()
    d = torch.where(x > y, x, y * 2) + x.rsqrt().nan_to_num(0.0) * 0 + torch.sigmoid(y).trunc()
    e = (k % 3) + (k // 2) + (-k // 3)
    red = (x.var(1, keepdim=True) + x.std(0) + x.norm(dim=1, keepdim=True)
           + x.logsumexp(1, keepdim=True) + x.amax(0) - x.amin(0))
    moves = (x.flip(0) + x.roll(1, 1) + F.pad(x, (1, 1), mode="reflect")[:, 1:-1]
             + x.tril() + x.triu(1) + x.cumsum(1))
    idx = x.argmax(1)
    bools = (x.isfinite() & (x != 0.25)) | (y < 0)
    return a + b + c + d + red + moves, e, idx, bools, F.gelu(x, approximate="tanh"), \
        x.reshape(4, 6)[1:3, ::2].permute(1, 0).softmax(-1), x.log_softmax(0)


def test_many_ops_agree_with_eager():
    torch.manual_seed(1)
    x, y = torch.randn(6, 4), torch.randn(6, 4)
    k = torch.randint(-20, 20, (6, 4))
    buf = io.BytesIO()
    gonnx.export(_many_ops, (x, y, k), buf, opset_version=18)
    got = _run(buf.getvalue(), x, y, k)
    ref = _many_ops(x, y, k)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        r = r.numpy()
        assert g.dtype == r.dtype and g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def test_every_registered_op_maps_or_has_a_reason():
    """A translation, a decomposition (its primitives are exported), or a reason."""
    decomposed = {n for n, op in REGISTRY.items() if op.decomposition is not None}
    missing = sorted(set(REGISTRY) - set(gonnx.CONVERTERS) - set(gonnx.UNSUPPORTED) - decomposed)
    assert not missing, f"ops with neither an ONNX translation nor a reason: {missing}"
    assert not set(gonnx.CONVERTERS) & set(gonnx.UNSUPPORTED)


def test_unsupported_op_is_named():
    def f(x):
        return x.cumprod(0) + 1
    with pytest.raises(NotImplementedError, match=r"op 'cumprod' .*test_onnx.py:\d+.*cumulative"):
        gonnx.export(f, torch.randn(3, 2), None)


def test_bad_arguments():
    m, x = make("mlp")
    with pytest.raises(NotImplementedError, match="dynamic_axes"):
        gonnx.export(m, x, None, dynamic_axes={"input_0": {0: "batch"}})
    with pytest.raises(TypeError, match="unexpected keyword"):
        gonnx.export(m, x, None, bogus=1)
    with pytest.raises(NotImplementedError, match="initializers"):
        gonnx.export(m, x, None, export_params=False)
    with pytest.raises(NotImplementedError, match="inference"):
        gonnx.export(m, x, None, training=True)
    with pytest.raises(ValueError, match="opset_version 9"):
        gonnx.export(m, x, None, opset_version=9)


def test_det_translates():
    if "linalg_det" not in REGISTRY:
        pytest.skip("the registry has no linalg_det")
    a = torch.randn(3, 4, 4)
    buf = io.BytesIO()
    gonnx.export(lambda m: torch.linalg.det(m) * 2, (a,), buf)
    np.testing.assert_allclose(_run(buf.getvalue(), a)[0], torch.linalg.det(a).numpy() * 2,
                               rtol=1e-4, atol=1e-5)
