"""Library steps write into the plan's buffers: the native conv, pooling, scatter-add
and recurrent kernels take ``out=`` (``kernels.cpu.handwritten.writes_out``), their
outputs are planned in the arena like kernel and GEMM outputs, and a steady-state
compiled training step allocates nothing of their size."""
import tracemalloc

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn as nn
import gcompile.nn.functional as F
from ir.registry import REGISTRY
from runtime.steps import _IntoRun, _PoolPairRun


def _conv_step(batch=16):
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.fc = nn.Linear(16 * 7 * 7, 10)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            return F.log_softmax(self.fc(torch.flatten(x, 1)), dim=1)

    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(batch, 3, 16, 16)
    y = torch.randint(0, 10, (batch,))

    def step(x, y):
        opt.zero_grad()
        loss = F.nll_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return model, step, x, y


def _lstm_step():
    torch.manual_seed(0)
    emb, lstm, head = nn.Embedding(20, 8), nn.LSTM(8, 32, batch_first=True), nn.Linear(32, 20)
    params = list(emb.parameters()) + list(lstm.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    x = torch.randint(0, 20, (4, 24))
    y = torch.randint(0, 20, (4, 24))

    def step(x, y):
        opt.zero_grad()
        h, _ = lstm(emb(x))
        loss = F.cross_entropy(head(h).reshape(-1, 20), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss
    return params, step, x, y


def _into_steps(plan):
    return {n.op: s for s in plan.steps if s.into for n in s.nodes}


def _planned(plan, step):
    return all(next(b for b in plan.buffers if b.slot == o).planned for o in step.outputs)


def test_conv_step_library_outputs_are_planned_buffers():
    _, step, x, y = _conv_step()
    f = torch.compile(step)
    for _ in range(2):
        f(x, y)
    plan = f.entries[-1].executable.plan
    into = _into_steps(plan)
    for op in ("conv", "conv_input_grad", "conv_weight_grad", "max_pool_indices",
               "pool_gather", "pool_scatter"):
        assert op in into, f"{op} does not write into a planned buffer:\n{plan}"
        # max pooling's indices and values: one step (runtime.steps.pool_pair_step)
        assert isinstance(into[op].run, (_IntoRun, _PoolPairRun)) and _planned(plan, into[op])
    # the buffer conv fills is the same arena view on every call
    s = into["conv"]
    seen = []
    real = s.run

    def spy(env):
        real(env)
        seen.append(env[s.outputs[0]])
    s.run = spy
    try:
        f(x, y)
        f(x, y)
    finally:
        s.run = real
    views = dict(plan._planned_views)  # built when the plan first took its arena block
    assert seen[0] is seen[1] is views[s.outputs[0]]
    assert np.shares_memory(seen[0], plan.arena)


def test_conv_step_allocates_nothing_large_in_steady_state():
    _, step, x, y = _conv_step(batch=32)
    f = torch.compile(step)
    for _ in range(3):
        f(x, y)
    plan = f.entries[-1].executable.plan
    big = max(s.nodes[0].out.nbytes for s in plan.steps if s.kind == "library")
    assert big >= 32 * 16 * 14 * 14 * 4   # conv2's output (its columns stay in the kernel)
    tracemalloc.start()
    try:
        f(x, y)
        tracemalloc.reset_peak()
        held, _ = tracemalloc.get_traced_memory()
        f(x, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # what the call allocates beyond what was held before it: less than half the largest
    # library output (conv's column blocks are kept per lane by the calling thread; the
    # plan's fresh outputs, ~40 KB, are allocated every call)
    assert peak - held < big // 2, (peak, held, big)


def test_conv_step_matches_eager():
    m1, s1, x, y = _conv_step()
    m2, s2, _, _ = _conv_step()
    f = torch.compile(s2)
    for _ in range(4):
        a, b = s1(x, y), f(x, y)
        np.testing.assert_allclose(b.item(), a.item(), rtol=1e-5)
    for p, q in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-4,
                                   atol=1e-6)


def test_lstm_step_scans_write_into_planned_buffers():
    p1, s1, x, y = _lstm_step()
    p2, s2, _, _ = _lstm_step()
    f = torch.compile(s2)
    for _ in range(3):
        a, b = s1(x, y), f(x, y)
        np.testing.assert_allclose(b.item(), a.item(), rtol=1e-5)
    for p, q in zip(p1, p2):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-4,
                                   atol=1e-6)
    plan = f.entries[-1].executable.plan
    into = _into_steps(plan)
    for op in ("lstm_scan", "lstm_scan_backward"):
        assert op in into and _planned(plan, into[op]), f"{op}:\n{plan}"
    # 20 symbols at 96 tokens: the input projection and its gradients run on the table
    # (ir.passes.rewrites.fold_embedding_projections): the table's gradient is the
    # (20, 4H) scatter-add of the projection's gradient times W_ih, that product the
    # weight's .grad, written straight into its output buffer (not copied there from the
    # arena: ir.passes.rewrites.drop_output_clones)
    assert into["embedding_backward"].nodes[0].inputs[0].shape == (96, 4 * 32)
    # (a matmul step may hold two products: runtime.matmul_pairs)
    products = [(s, k, n) for s in plan.steps if s.kind == "matmul"
                for k, n in enumerate(s.nodes)]
    assert not any(n.inputs[0].shape[0] == 96 and n.inputs[0].shape[-1] == 8
                   for _, _, n in products), str(plan)
    grad, k = next((s, k) for s, k, n in products if n.out.shape == (20, 8))
    slot = grad.outputs[k]
    at = plan.output_slots.index(slot)
    assert not next(b for b in plan.buffers if b.slot == slot).planned, str(plan)
    assert not plan.copy_outputs[at], str(plan)


def test_an_implementation_without_out_is_copied_in(monkeypatch):
    """Replacing an op's implementation after the plan was built (a test spy, another
    native version) keeps the step correct: its result is copied into the buffer."""
    _, s1, x, y = _conv_step(batch=4)
    _, s2, _, _ = _conv_step(batch=4)
    g = torch.compile(s2)
    np.testing.assert_allclose(g(x, y).item(), s1(x, y).item(), rtol=1e-5)
    op = REGISTRY["conv"]
    native = op.impl
    calls = []

    def plain(*args, **attrs):
        assert "out" not in attrs
        calls.append(1)
        return native(*args, **attrs)
    monkeypatch.setattr(op, "impl", plain)
    for _ in range(2):
        np.testing.assert_allclose(g(x, y).item(), s1(x, y).item(), rtol=1e-5)
    assert len(calls) >= 4  # the plan's conv steps and eager's


@pytest.mark.parametrize("op", ["im2col", "conv", "conv_input_grad", "conv_weight_grad",
                                "lstm_scan", "scatter"])
def test_native_implementations_take_out(op):
    assert getattr(REGISTRY[op].impl, "writes_out", False)
