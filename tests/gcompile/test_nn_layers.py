"""nn layers of issue 13 (nn group): Transformer family, ConvTranspose, RMSNorm, PReLU,
PixelShuffle, Upsample/interpolate modes, grid_sample, EmbeddingBag, CosineSimilarity, and
Module reassignment order. References are NumPy loops written from torch's definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn.functional as F
from gcompile import nn
from gcompile.autograd import gradcheck

RNG = np.random.default_rng(7)


def T(a, **kw):
    return torch.tensor(np.asarray(a), **kw)


def leaf(a):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=True)


# ---- transposed convolution ------------------------------------------------------------------
def _conv_transpose_ref(x, w, b, stride, padding, output_padding, groups, dilation):
    n, cin = x.shape[:2]
    sp = x.shape[2:]
    k = w.shape[2:]
    coutg = w.shape[1]
    out_sp = [(i - 1) * s - 2 * p + d * (kk - 1) + op + 1
              for i, s, p, d, kk, op in zip(sp, stride, padding, dilation, k, output_padding)]
    full = [o + 2 * p for o, p in zip(out_sp, padding)]
    out = np.zeros((n, coutg * groups) + tuple(full))
    cg = cin // groups
    for ni in range(n):
        for ci in range(cin):
            g = ci // cg
            for pos in np.ndindex(*sp):
                for kp in np.ndindex(*k):
                    tgt = tuple(pp * s + kk * d for pp, s, kk, d in zip(pos, stride, kp,
                                                                         dilation))
                    for co in range(coutg):
                        out[(ni, g * coutg + co) + tgt] += x[(ni, ci) + pos] * w[(ci, co) + kp]
    sl = tuple(slice(p, p + o) for p, o in zip(padding, out_sp))
    out = out[(slice(None), slice(None)) + sl]
    if b is not None:
        out = out + b.reshape((-1,) + (1,) * len(sp))
    return out


@pytest.mark.parametrize("nsp,stride,padding,output_padding,groups,dilation", [
    (1, 2, 1, 1, 1, 1), (2, 1, 0, 0, 1, 1), (2, 2, 1, 1, 2, 1), (2, (2, 3), (0, 1), (1, 2), 1,
                                                                 1),
    (2, 2, 0, 0, 1, 2), (3, 2, 1, 0, 1, 1)])
def test_conv_transpose_matches_definition(nsp, stride, padding, output_padding, groups,
                                           dilation):
    def tup(v):
        return (v,) * nsp if isinstance(v, int) else v
    cin, cout = 2 * groups, 3 * groups
    x = RNG.standard_normal((2, cin) + (3,) * nsp)
    w = RNG.standard_normal((cin, cout // groups) + (2,) * nsp)
    b = RNG.standard_normal(cout)
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nsp]
    got = fn(T(x), T(w), T(b), stride, padding, output_padding, groups, dilation).numpy()
    want = _conv_transpose_ref(x, w, b, tup(stride), tup(padding), tup(output_padding),
                               groups, tup(dilation))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_conv_transpose_is_the_adjoint_of_conv_and_has_gradients():
    x = RNG.standard_normal((2, 3, 7, 6))
    w = RNG.standard_normal((4, 3, 3, 3))
    y = F.conv2d(T(x), T(w), stride=2, padding=1).numpy()
    r = RNG.standard_normal(y.shape)
    xt = F.conv_transpose2d(T(r), T(w), stride=2, padding=1, output_padding=(0, 1)).numpy()
    np.testing.assert_allclose((y * r).sum(), (x * xt).sum(), rtol=1e-10)
    assert gradcheck(lambda a, b, c: F.conv_transpose2d(a, b, c, stride=2, padding=1),
                     (leaf(RNG.standard_normal((1, 2, 3, 3))),
                      leaf(RNG.standard_normal((2, 2, 2, 2))), leaf(RNG.standard_normal(2))))


def test_conv_transpose_modules_and_output_size():
    m = nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1)
    x = torch.randn(1, 3, 4, 4)
    assert m(x).shape == (1, 5, 7, 7)
    assert m(x, output_size=(8, 8)).shape == (1, 5, 8, 8)
    with pytest.raises(ValueError, match="valid sizes"):
        m(x, output_size=(10, 10))
    assert nn.ConvTranspose1d(2, 4, 3)(torch.randn(2, 5)).shape == (4, 7)
    assert nn.ConvTranspose3d(2, 2, 2, stride=2)(torch.randn(1, 2, 2, 2, 2)).shape == \
        (1, 2, 4, 4, 4)
    assert tuple(m.weight.shape) == (3, 5, 3, 3)
    cf = torch.compile(m)
    np.testing.assert_allclose(cf(x).detach().numpy(), m(x).detach().numpy(), rtol=1e-5,
                               atol=1e-6)


# ---- interpolate ---------------------------------------------------------------------------
def _src(i, n_in, n_out, align, scale):
    if align:
        return i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    r = n_in / n_out if scale is None else scale
    return (i + 0.5) * r - 0.5


def _interp_1d_ref(a, axis, n_out, mode, align, scale=None):
    a = np.moveaxis(a, axis, -1)
    n_in = a.shape[-1]
    out = np.zeros(a.shape[:-1] + (n_out,))
    for i in range(n_out):
        r = n_in / n_out if scale is None else scale
        if mode == "nearest":
            out[..., i] = a[..., min(int(math.floor(i * r)), n_in - 1)]
        elif mode == "nearest-exact":
            out[..., i] = a[..., min(int(math.floor((i + 0.5) * r)), n_in - 1)]
        elif mode == "linear":
            s = max(_src(i, n_in, n_out, align, scale), 0.0)
            lo = min(int(math.floor(s)), n_in - 1)
            hi = min(lo + 1, n_in - 1)
            out[..., i] = a[..., lo] * (1 - (s - lo)) + a[..., hi] * (s - lo)
        else:  # cubic
            s = _src(i, n_in, n_out, align, scale)
            f = math.floor(s)
            t = s - f
            def k(x, A=-0.75):
                x = abs(x)
                if x <= 1:
                    return ((A + 2) * x - (A + 3)) * x * x + 1
                if x < 2:
                    return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A
                return 0.0
            for m in range(-1, 3):
                out[..., i] += a[..., min(max(f + m, 0), n_in - 1)] * k(t - m)
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("mode,nsp", [("nearest", 2), ("nearest-exact", 2), ("linear", 1),
                                      ("bilinear", 2), ("bicubic", 2), ("trilinear", 3)])
@pytest.mark.parametrize("align", [None, True])
@pytest.mark.parametrize("size,scale", [((5, 7, 4), None), (None, 2.0), (None, 0.6)])
def test_interpolate_matches_reference(mode, nsp, align, size, scale):
    if align and mode.startswith("nearest"):
        pytest.skip("align_corners applies to interpolating modes only")
    a = RNG.standard_normal((2, 2) + (4, 5, 3)[:nsp])
    sz = size[:nsp] if size else None
    got = F.interpolate(T(a), size=sz, scale_factor=scale, mode=mode,
                        align_corners=align).numpy()
    want = a
    base = {"bilinear": "linear", "trilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    for d in range(nsp):
        n_out = sz[d] if sz else int(math.floor(a.shape[2 + d] * scale))
        want = _interp_1d_ref(want, 2 + d, n_out, base, bool(align),
                              None if scale is None else 1.0 / scale)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_interpolate_known_values_errors_and_gradients():
    x = T([[[0.0, 1.0]]])
    np.testing.assert_allclose(F.interpolate(x, scale_factor=2, mode="linear").numpy(),
                               [[[0.0, 0.25, 0.75, 1.0]]])
    np.testing.assert_allclose(F.interpolate(x, size=3, mode="linear", align_corners=True)
                               .numpy(), [[[0.0, 0.5, 1.0]]])
    a = RNG.standard_normal((1, 2, 4, 6))
    area = F.interpolate(T(a), size=(2, 3), mode="area").numpy()
    np.testing.assert_allclose(area, a.reshape(1, 2, 2, 2, 3, 2).mean((3, 5)))
    with pytest.raises(NotImplementedError, match="bilinear mode needs 4D"):
        F.interpolate(torch.randn(1, 1, 4), scale_factor=2, mode="bilinear")
    with pytest.raises(ValueError, match="align_corners"):
        F.interpolate(torch.randn(1, 1, 4), scale_factor=2, mode="nearest", align_corners=True)
    r = F.interpolate(T(a), scale_factor=1.5, mode="bilinear", recompute_scale_factor=True)
    np.testing.assert_allclose(r.numpy(), F.interpolate(T(a), size=(6, 9), mode="bilinear")
                               .numpy())
    assert gradcheck(lambda t: F.interpolate(t, scale_factor=2, mode="bicubic"),
                     (leaf(RNG.standard_normal((1, 1, 3, 3))),))
    up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
    np.testing.assert_allclose(up(T(a)).numpy(), nn.UpsamplingBilinear2d(scale_factor=2)(T(a))
                               .numpy())
    cf = torch.compile(lambda t: F.interpolate(t, scale_factor=2, mode="bilinear") * 2)
    np.testing.assert_allclose(cf(T(a)).numpy(), 2 * F.interpolate(T(a), scale_factor=2,
                                                                   mode="bilinear").numpy())
    assert cf.entries and not cf.graph_breaks


# ---- grid_sample ---------------------------------------------------------------------------
def _grid_sample_ref(x, grid, align, padding_mode):
    n, c, h, w = x.shape
    _, ho, wo, _ = grid.shape
    out = np.zeros((n, c, ho, wo))
    for ni in range(n):
        for i in range(ho):
            for j in range(wo):
                gx, gy = grid[ni, i, j]
                px = (gx + 1) / 2 * (w - 1) if align else ((gx + 1) * w - 1) / 2
                py = (gy + 1) / 2 * (h - 1) if align else ((gy + 1) * h - 1) / 2
                if padding_mode == "border":
                    px, py = min(max(px, 0), w - 1), min(max(py, 0), h - 1)
                x0, y0 = math.floor(px), math.floor(py)
                for xx, yy in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                    wgt = (1 - abs(px - xx)) * (1 - abs(py - yy))
                    if 0 <= xx < w and 0 <= yy < h:
                        out[ni, :, i, j] += wgt * x[ni, :, yy, xx]
    return out


@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_grid_sample(align, padding_mode):
    x = RNG.standard_normal((2, 3, 4, 5))
    grid = RNG.uniform(-1.2, 1.2, (2, 3, 2, 2))
    got = F.grid_sample(T(x), T(grid), align_corners=align, padding_mode=padding_mode).numpy()
    np.testing.assert_allclose(got, _grid_sample_ref(x, grid, align, padding_mode),
                               rtol=1e-10, atol=1e-12)
    theta = T(np.array([[[1.0, 0, 0], [0, 1.0, 0]]] * 2))
    ident = F.affine_grid(theta, (2, 3, 4, 5), align_corners=align)
    np.testing.assert_allclose(F.grid_sample(T(x), ident, align_corners=align).numpy(), x,
                               atol=1e-12)
    assert gradcheck(lambda a, g: F.grid_sample(a, g, align_corners=align,
                                                padding_mode=padding_mode),
                     (leaf(x[:1, :1]), leaf(RNG.uniform(-0.9, 0.9, (1, 2, 2, 2)))))


# ---- small layers ----------------------------------------------------------------------------
def test_rms_norm_prelu_pixel_shuffle():
    a = RNG.standard_normal((2, 3, 4))
    w = RNG.standard_normal(4)
    want = a / np.sqrt((a ** 2).mean(-1, keepdims=True) + 1e-6) * w
    np.testing.assert_allclose(F.rms_norm(T(a), (4,), T(w), 1e-6).numpy(), want)
    m = nn.RMSNorm([3, 4])
    np.testing.assert_allclose(m(T(a)).detach().numpy(),
                               a / np.sqrt((a ** 2).mean((1, 2), keepdims=True)
                                           + np.finfo(np.float64).eps))
    assert gradcheck(lambda t, ww: F.rms_norm(t, (4,), ww), (leaf(a), leaf(w)))
    slopes = RNG.uniform(0.1, 0.5, 3)
    np.testing.assert_allclose(F.prelu(T(a), T(slopes)).numpy(),
                               np.where(a >= 0, a, a * slopes[None, :, None]))
    p = nn.PReLU()
    assert p.weight.tolist() == [0.25]
    np.testing.assert_allclose(p(T(a)).detach().numpy(), np.where(a >= 0, a, 0.25 * a))
    with pytest.raises(RuntimeError, match="Mismatch of parameter numbers"):
        F.prelu(T(a), T(np.ones(5)))
    x = RNG.standard_normal((2, 8, 3, 2))
    ps = F.pixel_shuffle(T(x), 2).numpy()
    want = np.zeros((2, 2, 6, 4))
    for c in range(2):
        for i in range(2):
            for j in range(2):
                want[:, c, i::2, j::2] = x[:, c * 4 + i * 2 + j]
    np.testing.assert_array_equal(ps, want)
    np.testing.assert_array_equal(F.pixel_unshuffle(T(ps), 2).numpy(), x)
    assert nn.PixelShuffle(2)(T(x)).shape == (2, 2, 6, 4)


def test_cosine_similarity_pairwise_distance_modules():
    a, b = RNG.standard_normal((4, 5)), RNG.standard_normal((4, 5))
    want = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    np.testing.assert_allclose(nn.CosineSimilarity(dim=1)(T(a), T(b)).numpy(), want)
    np.testing.assert_allclose(nn.PairwiseDistance()(T(a), T(b)).numpy(),
                               np.linalg.norm(a - b + 1e-6, axis=1), rtol=1e-10)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag(mode):
    w = RNG.standard_normal((10, 3))
    idx = np.array([1, 2, 4, 5, 4, 3, 2, 9])
    offs = [0, 3, 3, 6]
    bag = nn.EmbeddingBag(10, 3, mode=mode, _weight=T(w))
    got = bag(T(idx), T(offs)).detach().numpy()
    red = {"sum": np.sum, "mean": np.mean, "max": np.max}[mode]
    ends = offs[1:] + [len(idx)]
    want = np.stack([red(w[idx[s:e]], 0) if e > s else np.zeros(3)
                     for s, e in zip(offs, ends)])
    np.testing.assert_allclose(got, want)
    two_d = bag(T(idx.reshape(2, 4))).detach().numpy()
    np.testing.assert_allclose(two_d, np.stack([red(w[r], 0) for r in idx.reshape(2, 4)]))
    if mode == "sum":
        psw = RNG.standard_normal(8)
        np.testing.assert_allclose(
            F.embedding_bag(T(idx), T(w), T(offs), mode="sum", per_sample_weights=T(psw))
            .numpy(), np.stack([(w[idx[s:e]] * psw[s:e, None]).sum(0)
                                for s, e in zip(offs, ends)]))
    assert gradcheck(lambda ww: F.embedding_bag(T(idx), ww, T(offs), mode=mode), (leaf(w),))
    pad = F.embedding_bag(T(idx.reshape(2, 4)), T(w), mode="mean", padding_idx=4).numpy()
    rows = [r[r != 4] for r in idx.reshape(2, 4)]
    np.testing.assert_allclose(pad, np.stack([w[r].mean(0) for r in rows]))


# ---- transformer ---------------------------------------------------------------------------
def _np(t):
    return t.detach().numpy().astype(np.float64)


def _mha_ref(mha, q, k, v, mask=None, kpm=None):
    """(L, E) single-sample multi-head attention from the module's weights."""
    e = q.shape[-1]
    h = mha.num_heads
    w, b = _np(mha.in_proj_weight), _np(mha.in_proj_bias)
    qp, kp, vp = q @ w[:e].T + b[:e], k @ w[e:2 * e].T + b[e:2 * e], v @ w[2 * e:].T + b[2 * e:]
    d = e // h
    outs = []
    for hi in range(h):
        s = qp[:, hi * d:(hi + 1) * d] @ kp[:, hi * d:(hi + 1) * d].T / math.sqrt(d)
        if mask is not None:
            s = s + mask
        if kpm is not None:
            s = np.where(kpm[None, :], -np.inf, s)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        outs.append(s @ vp[:, hi * d:(hi + 1) * d])
    return np.concatenate(outs, -1) @ _np(mha.out_proj.weight).T + _np(mha.out_proj.bias)


def _ln(x, ln):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + ln.eps) * _np(ln.weight) + _np(ln.bias)


def _ff(x, layer):
    hdn = np.maximum(x @ _np(layer.linear1.weight).T + _np(layer.linear1.bias), 0)
    return hdn @ _np(layer.linear2.weight).T + _np(layer.linear2.bias)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_reference(norm_first):
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                       norm_first=norm_first).double()
    x = RNG.standard_normal((2, 5, 8))
    mask = np.triu(np.full((5, 5), -np.inf), 1)
    kpm = np.array([[False] * 5, [False, False, False, True, True]])
    got = _np(layer(T(x), src_mask=T(mask), src_key_padding_mask=T(kpm)))
    for bi in range(2):
        xb = x[bi]

        def sa(t, bi=bi):
            return _mha_ref(layer.self_attn, t, t, t, mask, kpm[bi])
        if norm_first:
            y = xb + sa(_ln(xb, layer.norm1))
            y = y + _ff(_ln(y, layer.norm2), layer)
        else:
            y = _ln(xb + sa(xb), layer.norm1)
            y = _ln(y + _ff(y, layer), layer.norm2)
        np.testing.assert_allclose(got[bi], y, rtol=1e-9, atol=1e-10)
    causal = _np(layer(T(x), is_causal=True, src_mask=T(mask)))
    np.testing.assert_allclose(causal, _np(layer(T(x), src_mask=T(mask))))


def test_decoder_layer_matches_reference():
    layer = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0).double()  # (L, N, E)
    tgt, mem = RNG.standard_normal((3, 2, 8)), RNG.standard_normal((4, 2, 8))
    tmask = np.triu(np.full((3, 3), -np.inf), 1)
    got = _np(layer(T(tgt), T(mem), tgt_mask=T(tmask)))
    for bi in range(2):
        t, m = tgt[:, bi], mem[:, bi]
        y = _ln(t + _mha_ref(layer.self_attn, t, t, t, tmask), layer.norm1)
        y = _ln(y + _mha_ref(layer.multihead_attn, y, m, m), layer.norm2)
        y = _ln(y + _ff(y, layer), layer.norm3)
        np.testing.assert_allclose(got[:, bi], y, rtol=1e-9, atol=1e-10)


def test_transformer_end_to_end():
    model = nn.Transformer(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=2,
                           dim_feedforward=16, dropout=0.0, batch_first=True)
    assert len(model.encoder.layers) == 2 and model.encoder.norm is not None
    # the stacked layers are independent copies
    assert model.encoder.layers[0].linear1.weight is not model.encoder.layers[1].linear1.weight
    src, tgt = torch.randn(2, 5, 8), torch.randn(2, 3, 8)
    mask = nn.Transformer.generate_square_subsequent_mask(3)
    assert mask.tolist()[0] == [0.0, -math.inf, -math.inf]
    out = model(src, tgt, tgt_mask=mask)
    assert out.shape == (2, 3, 8)
    out.pow(2).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    # the future of tgt does not change earlier outputs under the causal mask
    tgt2 = tgt.clone()
    tgt2[:, 2] += 1.0
    out2 = model(src, tgt2, tgt_mask=mask)
    np.testing.assert_allclose(out2[:, :2].detach().numpy(), out[:, :2].detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="batch number"):
        model(torch.randn(3, 5, 8), tgt)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0), 2)
    cf = torch.compile(enc)
    x = torch.randn(5, 2, 8)
    np.testing.assert_allclose(cf(x).detach().numpy(), enc(x).detach().numpy(), rtol=1e-4,
                               atol=1e-5)


# ---- module semantics ----------------------------------------------------------------------
def test_reassigning_children_and_parameters_keeps_their_position():
    seq = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    seq[0] = nn.Linear(2, 2)
    assert [n for n, _ in seq.named_children()] == ["0", "1", "2"]

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(1, 1)
            self.b = nn.Linear(1, 1)
            self.p = nn.Parameter(torch.ones(1))
            self.q = nn.Parameter(torch.ones(1))

    m = M()
    m.a = nn.Linear(1, 1)
    m.p = nn.Parameter(torch.zeros(1))
    assert [n for n, _ in m.named_children()] == ["a", "b"]
    assert list(m.state_dict()) == ["p", "q", "a.weight", "a.bias", "b.weight", "b.bias"]
    assert [n for n, _ in m.named_parameters()][:2] == ["p", "q"]
    import tempfile
    with pytest.raises(Exception, match="state_dict"):
        torch.save(m, tempfile.mktemp())


def test_rnn_cells_check_their_inputs_as_torch():
    lstm, gru, rnn = nn.LSTMCell(3, 4), nn.GRUCell(3, 4), nn.RNNCell(3, 4)
    with pytest.raises(RuntimeError, match="input has inconsistent input_size: got 5 expected 3"):
        lstm(torch.randn(2, 5))
    with pytest.raises(ValueError, match="Expected input to be 1D or 2D, got 3D"):
        gru(torch.randn(1, 2, 3))
    with pytest.raises(RuntimeError, match="Input batch size 2 doesn't match hidden0 batch size 3"):
        gru(torch.randn(2, 3), torch.randn(3, 4))
    with pytest.raises(RuntimeError, match="hidden1 has inconsistent hidden_size: got 5"):
        lstm(torch.randn(2, 3), (torch.randn(2, 4), torch.randn(2, 5)))
    with pytest.raises(ValueError, match="tuple of"):
        lstm(torch.randn(2, 3), (torch.randn(2, 4),))
    with pytest.raises(ValueError, match="Expected hidden to be 1D or 2D"):
        rnn(torch.randn(2, 3), torch.randn(1, 2, 4))
    h, c = lstm(torch.randn(3))
    assert h.shape == (4,) and c.shape == (4,)
    assert gru(torch.randn(3), torch.randn(4)).shape == (4,)
