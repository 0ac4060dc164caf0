"""MaxUnpool1-3d, ChannelShuffle and FeatureAlphaDropout against torch / their definition."""
import numpy as np
import pytest

import gcompile as gc

torch = pytest.importorskip("torch", reason="the references are torch's own layers")


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_max_unpool_matches_torch_forward_and_backward(nd):
    x = np.random.default_rng(nd).standard_normal((2, 3) + (6,) * nd).astype(np.float32)
    pooled, idx = getattr(torch.nn.functional, f"max_pool{nd}d")(torch.tensor(x), 2,
                                                                return_indices=True)
    gp, gidx = getattr(gc.nn.functional, f"max_pool{nd}d")(gc.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(gidx.numpy(), idx.numpy())
    outs = []
    for m, i in ((torch, idx), (gc, gidx)):
        p = m.tensor(pooled.numpy(), requires_grad=True)
        u = getattr(m.nn, f"MaxUnpool{nd}d")(2)(p, i)
        w = m.tensor(np.arange(int(np.prod(tuple(u.shape))), dtype=np.float32)
                     .reshape(tuple(u.shape)))
        (u * w).sum().backward()
        outs.append((u.detach().numpy(), p.grad.numpy()))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(b, a)


def test_max_unpool_output_size_and_errors():
    x = torch.randn(1, 2, 6, 6)
    pooled, idx = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
    want = torch.nn.functional.max_unpool2d(pooled, idx, 2, output_size=(7, 7))
    got = gc.nn.functional.max_unpool2d(gc.tensor(pooled.numpy()), gc.tensor(idx.numpy()), 2,
                                        output_size=(7, 7))
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    with pytest.raises(ValueError, match="invalid output_size"):
        gc.nn.functional.max_unpool2d(gc.tensor(pooled.numpy()), gc.tensor(idx.numpy()), 2,
                                      output_size=(9, 9))
    with pytest.raises(RuntimeError, match="shape of indices"):
        gc.nn.functional.max_unpool2d(gc.tensor(pooled.numpy()), gc.tensor(idx.numpy())[:, :1], 2)


def test_max_unpool_compiles():
    x = gc.randn(2, 3, 8, 8)
    f = gc.compile(lambda x: gc.nn.functional.max_unpool2d(
        *gc.nn.functional.max_pool2d(x, 2, return_indices=True), 2))
    for _ in range(2):
        np.testing.assert_array_equal(f(x).numpy(), gc.nn.functional.max_unpool2d(
            *gc.nn.functional.max_pool2d(x, 2, return_indices=True), 2).numpy())
    assert f.entries and not f.graph_breaks


def test_channel_shuffle_matches_torch():
    x = np.random.default_rng(0).standard_normal((2, 6, 3, 2)).astype(np.float32)
    for g in (1, 2, 3, 6):
        np.testing.assert_array_equal(gc.nn.ChannelShuffle(g)(gc.tensor(x)).numpy(),
                                      torch.nn.ChannelShuffle(g)(torch.tensor(x)).numpy())
    with pytest.raises(RuntimeError, match="divisible by groups"):
        gc.nn.functional.channel_shuffle(gc.tensor(x), 4)


def test_feature_alpha_dropout_drops_whole_channels_and_keeps_moments():
    gc.manual_seed(0)
    x = gc.randn(64, 128, 8, 8)
    y = gc.nn.FeatureAlphaDropout(0.3).train()(x).numpy()
    xs = x.numpy()
    alpha_p = -1.7580993408473766
    a = ((1 - 0.3) * (1 + 0.3 * alpha_p ** 2)) ** -0.5
    b = -a * alpha_p * 0.3
    dropped = np.all(np.isclose(y, alpha_p * a + b, atol=1e-5), axis=(2, 3))
    kept = np.all(np.isclose(y, xs * a + b, atol=1e-5), axis=(2, 3))
    assert np.all(dropped | kept)
    assert 0.25 < dropped.mean() < 0.35
    assert abs(y.mean()) < 0.05 and abs(y.std() - 1.0) < 0.05  # self-normalising
    assert gc.nn.FeatureAlphaDropout(0.3).eval()(x) is x


@pytest.mark.parametrize("shape,k,d,p,s", [((2, 3, 5, 6), (2, 3), 1, 1, (2, 1)),
                                           ((1, 2, 7, 7), 3, 2, 0, 1),
                                           ((3, 4, 4), 2, 1, 0, 2),
                                           ((2, 1, 6, 5), (3, 2), (1, 2), (2, 1), (1, 3))])
def test_unfold_and_fold_match_torch_with_gradients(shape, k, d, p, s):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    outs = []
    for m in (torch, gc):
        xt = m.tensor(x, requires_grad=True)
        u = m.nn.Unfold(k, d, p, s)(xt)
        w = np.random.default_rng(1).standard_normal(tuple(u.shape)).astype(np.float32)
        (u * m.tensor(w)).sum().backward()
        cols = m.tensor(w, requires_grad=True)
        f = m.nn.Fold(shape[-2:], k, d, p, s)(cols)
        v = np.random.default_rng(2).standard_normal(tuple(f.shape)).astype(np.float32)
        (f * m.tensor(v)).sum().backward()
        outs.append([u.detach().numpy(), xt.grad.numpy(), f.detach().numpy(), cols.grad.numpy()])
    for a, b in zip(*outs):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


def test_fold_errors_and_compiled_round_trip():
    with pytest.raises(RuntimeError, match="divisible by the product of kernel_size"):
        gc.nn.functional.fold(gc.randn(2, 7, 4), (3, 3), 2)
    with pytest.raises(RuntimeError, match="number of sliding blocks 2 \\* 2 = 4"):
        gc.nn.functional.fold(gc.randn(2, 8, 5), (3, 3), 2)
    with pytest.raises(RuntimeError, match="Only 3D or 4D"):
        gc.nn.functional.unfold(gc.randn(3, 4), 2)
    f = gc.compile(lambda x: gc.nn.functional.fold(
        gc.nn.functional.unfold(x, 3, padding=1), (6, 6), 3, padding=1))
    x = gc.randn(2, 3, 6, 6)
    want = torch.nn.functional.fold(torch.nn.functional.unfold(torch.tensor(x.numpy()), 3,
                                                               padding=1), (6, 6), 3, padding=1)
    for _ in range(2):
        np.testing.assert_allclose(f(x).numpy(), want.numpy(), rtol=1e-6)
    assert f.entries and not f.graph_breaks
