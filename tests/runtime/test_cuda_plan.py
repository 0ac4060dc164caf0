"""Compiled plans on CUDA (simulator, tiny sizes): the fused graph's device plan
against the CPU plan of the same graph (its specs evaluated by NumPy)."""
from __future__ import annotations

import os

import numpy as np
import pytest

try:
    from numba import cuda
except ImportError:  # pragma: no cover - depends on the install
    pytest.skip("numba-cuda is not installed", allow_module_level=True)

from ir import dtypes as dt  # noqa: E402
from ir.graph import Graph  # noqa: E402
from runtime.cuda_plan import compile_cuda  # noqa: E402
from runtime.lower import compile_graph  # noqa: E402
from runtime.plan import Executor  # noqa: E402
from runtime.reference import ReferenceKernel  # noqa: E402

pytestmark = pytest.mark.skipif(
    os.environ.get("NUMBA_ENABLE_CUDASIM", "0") in ("", "0") and not cuda.is_available(),
    reason="no GPU and not under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")

RNG = np.random.default_rng(1)


def _mlp() -> Graph:
    g = Graph()
    x = g.add_input((4, 6), dt.float32, "x")
    w1 = g.add_input((8, 6), dt.float32, "w1")
    b1 = g.add_input((8,), dt.float32, "b1")
    w2 = g.add_input((5, 8), dt.float32, "w2")
    b2 = g.add_input((5,), dt.float32, "b2")
    h = g.add_node("relu", [g.add_node("linear", [x, w1, b1])])
    y = g.add_node("softmax", [g.add_node("linear", [h, w2, b2])], {"dim": -1})
    g.set_outputs([y, h])
    return g


def _chain() -> Graph:
    g = Graph()
    a = g.add_input((3, 5), dt.float32, "a")
    b = g.add_input((5,), dt.float32, "b")
    t = g.add_node("tanh", [g.add_node("mul", [g.add_node("add", [a, b]), 0.5])])
    e = g.add_node("gelu", [g.add_node("permute", [t], {"dims": (1, 0)})],
                   {"approximate": "tanh"})
    s = g.add_node("sum", [e], {"dims": (0,), "keepdim": True})
    ln = g.add_node("layer_norm", [a], {"normalized_ndim": 1, "eps": 1e-5,
                                        "has_weight": False, "has_bias": False})
    g.set_outputs([e, s, ln])
    return g


def _check(make, arrays, rtol=1e-5, atol=1e-6):
    ref = Executor(compile_graph(make(), make_kernel=ReferenceKernel).plan)(arrays)
    ex = compile_cuda(make())
    got = ex([cuda.to_device(a) for a in arrays])
    assert len(got) == len(ref)
    for r, d in zip(ref, got):
        np.testing.assert_allclose(d.copy_to_host(), r, rtol=rtol, atol=atol)
    return ex


def test_mlp_inference_plan_matches_cpu():
    arrays = [RNG.standard_normal(s).astype(np.float32)
              for s in [(4, 6), (8, 6), (8,), (5, 8), (5,)]]
    ex = _check(_mlp, arrays)
    kinds = [s.kind for s in ex.plan.steps]
    assert "matmul" in kinds and "kernel" in kinds
    assert not ex.host_steps, ex.host_steps  # all on the device
    assert ex.arena is not None
    arena = ex.arena
    # a second call reuses the arena and gives the same numbers
    again = ex([cuda.to_device(a) for a in arrays])
    first = ex([cuda.to_device(a) for a in arrays])
    assert ex.arena is arena
    np.testing.assert_array_equal(again[0].copy_to_host(), first[0].copy_to_host())


def test_fused_chain_rows_and_views_match_cpu():
    arrays = [RNG.standard_normal((3, 5)).astype(np.float32),
              RNG.standard_normal(5).astype(np.float32)]
    ex = _check(_chain, arrays)
    assert not ex.host_steps, ex.host_steps


def test_attention_runs_decomposed_on_the_device():
    """The CPU keeps sdpa whole for its native kernel; the device plan decomposes it into
    matmuls and softmax rows, which have device kernels (tracing with device tensors
    takes the composite path anyway; only the causal mask's aranges have none)."""
    def make():
        g = Graph()
        q, k, v = (g.add_input((2, 5, 4), dt.float32, n) for n in "qkv")
        g.set_outputs([g.add_node("sdpa", [q, k, v], {"scale": 0.5, "causal": True})])
        return g
    ex = _check(make, [RNG.standard_normal((2, 5, 4)).astype(np.float32) for _ in range(3)])
    assert all(h.startswith("arange") for h in ex.host_steps), ex.host_steps
    assert "sdpa" not in {s.name.split()[0] for s in ex.plan.steps}


def test_library_step_runs_through_host_memory_explicitly():
    def make():
        g = Graph()
        x = g.add_input((2, 6), dt.float32, "x")
        c = g.add_node("roll", [g.add_node("exp", [x])], {"shifts": (2,), "dims": (1,)})
        g.set_outputs([g.add_node("add", [c, 1.0])])
        return g
    ex = _check(make, [RNG.standard_normal((2, 6)).astype(np.float32)])
    assert any("roll" in s for s in ex.host_steps), ex.host_steps


def test_host_inputs_are_refused():
    ex = compile_cuda(_chain())
    with pytest.raises(TypeError, match="same device"):
        ex([np.zeros((3, 5), np.float32), np.zeros(5, np.float32)])


def test_compile_on_cuda_tensors_runs_the_device_plan():

    import gcompile as torch
    import gcompile.nn as nn
    from gcompile.compiler.backend import CudaPlanExecutable
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.Softmax(dim=-1))
    x = torch.randn(4, 6)
    ref = m(x).detach().numpy()
    m.to("cuda")
    cm = torch.compile(m)
    with torch.no_grad():
        y = cm(x.cuda())
        y2 = cm(x.cuda())
    assert y.is_cuda and y2.is_cuda
    np.testing.assert_allclose(y.cpu().numpy(), ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y2.cpu().numpy(), ref, rtol=1e-5, atol=1e-7)
    exes = [e for ents in cm._compiled._entries.values() for ent in ents
            for e in ent.executables()]
    assert exes and all(isinstance(e, CudaPlanExecutable) for e in exes)
    assert not any(e.executor.host_steps for e in exes)


def _train(devn: str, compiled: bool, whole_step: bool, steps: int = 3):
    import gcompile as torch
    import gcompile.nn as nn
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 3)).to(devn)
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    lossf = nn.CrossEntropyLoss()
    x = torch.randn(4, 6).to(devn)
    t = torch.tensor([0, 2, 1, 0]).to(devn)
    fwd = torch.compile(m) if compiled and not whole_step else m

    def step(a, b):
        opt.zero_grad()
        loss = lossf(fwd(a), b)
        loss.backward()
        opt.step()
        return loss
    run = torch.compile(step) if compiled and whole_step else step
    losses = [float(run(x, t).cpu().item()) for _ in range(steps)]
    return losses, [p.detach().cpu().numpy() for p in m.parameters()], run, fwd


@pytest.mark.parametrize("whole_step", [True, False])
def test_compiled_training_on_cuda_matches_cpu(whole_step):
    from gcompile.compiler.backend import CudaPlanExecutable
    ref_losses, ref_params, _, _ = _train("cpu", False, whole_step)
    losses, params, run, fwd = _train("cuda", True, whole_step)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for p, r in zip(params, ref_params):
        np.testing.assert_allclose(p, r, rtol=1e-4, atol=1e-6)
    cf = run if whole_step else fwd._compiled
    exes = [e for ents in cf._entries.values() for ent in ents for e in ent.executables()]
    assert exes and all(isinstance(e, CudaPlanExecutable) for e in exes)
    host = [h for e in exes for h in e.executor.host_steps]
    assert not host, host  # cross-entropy's check, gather and scatter included


def test_compiled_cnn_step_on_cuda_matches_cpu():
    """Conv (im2col + GEMM), max pooling and SGD momentum, all on the device."""
    import gcompile as torch
    import gcompile.nn as nn

    def train(devn, compiled):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8, 3)).to(devn)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        lossf = nn.CrossEntropyLoss()
        x = torch.randn(2, 1, 6, 6).to(devn)
        t = torch.tensor([0, 2]).to(devn)

        def step(a, b):
            opt.zero_grad()
            loss = lossf(m(a), b)
            loss.backward()
            opt.step()
            return loss
        run = torch.compile(step) if compiled else step
        losses = [float(run(x, t).cpu().item()) for _ in range(3)]
        return losses, [p.detach().cpu().numpy() for p in m.parameters()], run
    ref_losses, ref_params, _ = train("cpu", False)
    losses, params, run = train("cuda", True)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for p, r in zip(params, ref_params):
        np.testing.assert_allclose(p, r, rtol=1e-4, atol=1e-6)
    host = [h for ents in run._entries.values() for e in ents for x in e.executables()
            for h in x.executor.host_steps]
    assert not host, host  # im2col, cat, max pooling and its gradient included


def test_a_kernel_that_fails_on_the_device_runs_its_spec_on_the_host(monkeypatch):
    from kernels.cuda import CudaKernel
    real = CudaKernel.rows

    def refuse(self, *a, **k):
        raise NotImplementedError("pretend the device compiler refused it")
    monkeypatch.setattr(CudaKernel, "rows", refuse)
    arrays = [RNG.standard_normal((3, 5)).astype(np.float32),
              RNG.standard_normal(5).astype(np.float32)]
    ex = _check(_chain, arrays)
    assert any("CUDA kernel failed" in h for h in ex.host_steps), ex.host_steps
    monkeypatch.setattr(CudaKernel, "rows", real)
