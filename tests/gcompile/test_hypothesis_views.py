"""Property tests: broadcasting against NumPy, and chains of views.

Torch's strides are plain arithmetic: a contiguous tensor has
contiguous_strides(shape); permute permutes them, slicing multiplies by the
step, unsqueeze inserts ``stride[d] * size[d]`` and expand puts 0. The model
below tracks (shape, strides, offset) that way and the real tensor must agree,
share memory with its base, and hold the same values as NumPy.
"""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import gcompile as torch
from ir.shapes import contiguous_strides, view_strides

SETTINGS = settings(max_examples=60, deadline=None)

dims = st.integers(1, 4)
shapes = st.lists(dims, min_size=0, max_size=4).map(tuple)


@st.composite
def broadcastable_pair(draw):
    out = draw(st.lists(dims, min_size=0, max_size=4))
    a = [d if draw(st.booleans()) else 1 for d in out]
    b = [d if draw(st.booleans()) else 1 for d in out]
    a = a[draw(st.integers(0, len(a))):]
    return tuple(a), tuple(b)


@SETTINGS
@given(broadcastable_pair(), st.sampled_from(["add", "mul", "sub", "maximum", "lt"]),
       st.sampled_from([torch.float32, torch.int64, torch.float64]))
def test_broadcasting_matches_numpy(pair, op, dtype):
    sa, sb = pair
    rng = np.random.default_rng(abs(hash((sa, sb))) % 2 ** 32)
    a = np.asarray(rng.standard_normal(sa) * 5).astype(dtype.np)
    b = np.asarray(rng.standard_normal(sb) * 5).astype(dtype.np)
    got = getattr(torch, op)(torch.from_numpy(a), torch.from_numpy(b))
    want = {"add": np.add, "mul": np.multiply, "sub": np.subtract, "maximum": np.maximum,
            "lt": np.less}[op](a, b)
    assert tuple(got.shape) == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    assert torch.broadcast_shapes(sa, sb) == want.shape


@SETTINGS
@given(broadcastable_pair())
def test_broadcast_gradient_sums_back(pair):
    sa, sb = pair
    a = torch.ones(sa, dtype=torch.float64, requires_grad=True)
    b = torch.ones(sb, dtype=torch.float64, requires_grad=True)
    (a * b * 2).sum().backward()
    out = np.broadcast_shapes(sa, sb)
    n = int(np.prod(out)) if out else 1
    assert tuple(a.grad.shape) == sa and tuple(b.grad.shape) == sb
    assert a.grad.sum().item() == 2 * n and b.grad.sum().item() == 2 * n


# ---- view chains ----------------------------------------------------------------
class Model:
    """Expected (shape, strides, offset) of a view, tracked with torch's rules."""

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.strides = contiguous_strides(shape)
        self.offset = 0


def _apply(step, t, a, m, draw):
    kind = step
    nd = len(m.shape)
    if kind == "permute" and nd >= 2:
        perm = draw(st.permutations(range(nd)))
        t, a = t.permute(*perm), a.transpose(perm)
        m.shape = tuple(m.shape[p] for p in perm)
        m.strides = tuple(m.strides[p] for p in perm)
    elif kind == "slice" and nd >= 1:
        d = draw(st.integers(0, nd - 1))
        n = m.shape[d]
        start = draw(st.integers(0, max(n - 1, 0)))
        step_ = draw(st.integers(1, 3))
        idx = (slice(None),) * d + (slice(start, None, step_),)
        t, a = t[idx], a[idx]
        new = len(range(start, n, step_))
        m.offset += start * m.strides[d]
        m.shape = m.shape[:d] + (new,) + m.shape[d + 1:]
        m.strides = m.strides[:d] + (m.strides[d] * step_,) + m.strides[d + 1:]
    elif kind == "select" and nd >= 1:
        d = draw(st.integers(0, nd - 1))
        i = draw(st.integers(0, m.shape[d] - 1))
        t, a = t.select(d, i), a[(slice(None),) * d + (i,)]
        m.offset += i * m.strides[d]
        m.shape = m.shape[:d] + m.shape[d + 1:]
        m.strides = m.strides[:d] + m.strides[d + 1:]
    elif kind == "unsqueeze":
        d = draw(st.integers(0, nd))
        t, a = t.unsqueeze(d), np.expand_dims(a, d)
        s = m.strides[d] * m.shape[d] if d < nd else 1
        m.shape = m.shape[:d] + (1,) + m.shape[d:]
        m.strides = m.strides[:d] + (s,) + m.strides[d:]
    elif kind == "transpose" and nd >= 2:
        i, j = draw(st.integers(0, nd - 1)), draw(st.integers(0, nd - 1))
        t, a = t.transpose(i, j), np.swapaxes(a, i, j)
        sh, stv = list(m.shape), list(m.strides)
        sh[i], sh[j] = sh[j], sh[i]
        stv[i], stv[j] = stv[j], stv[i]
        m.shape, m.strides = tuple(sh), tuple(stv)
    elif kind == "view":
        new = draw(st.sampled_from(_factorings(m.shape)))
        vs = view_strides(m.shape, m.strides, new)
        if vs is None:
            try:
                t.view(new)
            except RuntimeError as e:
                assert "view size is not compatible" in str(e)
            else:
                raise AssertionError(f"view {m.shape}->{new} with strides {m.strides} "
                                     "should have raised")
            return t, a
        t, a = t.view(new), a.reshape(new)
        m.shape, m.strides = tuple(new), vs
    return t, a


def _factorings(shape):
    n = int(np.prod(shape)) if shape else 1
    out = [(n,), (1, n), tuple(shape) + (1,)]
    for k in range(2, n + 1):
        if n % k == 0:
            out.append((k, n // k))
    return out


def _torch_strides(model):
    # torch reports size-1 dims' strides from the arithmetic above too
    return model.strides


@SETTINGS
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), st.data())
def test_view_chains(shape, data):
    base_np = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    base = torch.from_numpy(base_np.copy())
    t, a, m = base, base_np, Model(shape)
    steps = data.draw(st.lists(st.sampled_from(
        ["permute", "slice", "select", "unsqueeze", "transpose", "view"]), max_size=5))
    for step in steps:
        t, a, = _apply(step, t, a, m, data.draw)
        assert tuple(t.shape) == m.shape == a.shape
        np.testing.assert_array_equal(t.numpy(), a)
        if t.numel() > 1:
            assert t.stride() == m.strides, (steps, t.stride(), m.strides)
        if t.numel():
            assert t.storage_offset() == m.offset
    # the chain still aliases the base
    if t.numel():
        t.fill_(-7.0)
        assert (base.numpy() == -7.0).sum() == t.numel()
    # reshape copies only when view would fail
    if t.numel() > 1:
        can_view = view_strides(tuple(t.shape), t.stride(), (t.numel(),)) is not None
        r = t.reshape(-1)
        assert (r.data_ptr() == t.data_ptr()) == can_view or not can_view
        if can_view:
            assert np.shares_memory(r.numpy(), base.numpy())
        else:
            assert not np.shares_memory(r.numpy(), base.numpy())
        assert t.is_contiguous() == (t.stride() == contiguous_strides(tuple(t.shape))) or any(
            s == 1 for s in t.shape)
