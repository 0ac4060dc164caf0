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
