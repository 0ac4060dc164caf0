"""TripletMarginLoss, TripletMarginWithDistanceLoss and RReLU against torch and compiled."""
import numpy as np
import pytest

import gcompile as gc

torch = pytest.importorskip("torch", reason="the references are torch's own layers")


def _triplets(shape=(5, 7), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]


@pytest.mark.parametrize("kw", [{}, {"swap": True}, {"margin": 0.5, "p": 1.0},
                                {"reduction": "none"}, {"reduction": "sum"}])
@pytest.mark.parametrize("shape", [(5, 7), (7,)])
def test_triplet_margin_loss_matches_torch(kw, shape):
    arrays = _triplets(shape)
    outs = []
    for m in (torch, gc):
        ts = [m.tensor(a, requires_grad=True) for a in arrays]
        loss = m.nn.TripletMarginLoss(**kw)(*ts)
        loss.sum().backward()
        outs.append([loss.detach().numpy()] + [t.grad.numpy() for t in ts])
    for x, y in zip(*outs):
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)


def test_triplet_with_distance_and_errors():
    arrays = _triplets()
    got = []
    for m in (torch, gc):
        def cos_dist(x, y, m=m):
            return 1 - m.nn.functional.cosine_similarity(x, y)
        ts = [m.tensor(a) for a in arrays]
        got.append(float(m.nn.TripletMarginWithDistanceLoss(distance_function=cos_dist,
                                                            swap=True)(*ts)))
    assert got[0] == pytest.approx(got[1], rel=1e-6)
    a, p, n = (gc.tensor(x) for x in arrays)
    with pytest.raises(RuntimeError, match="same number of dimensions"):
        gc.nn.functional.triplet_margin_loss(a, p[0], n)
    with pytest.raises(ValueError, match="greater than 0"):
        gc.nn.TripletMarginWithDistanceLoss(margin=0.0)


def test_triplet_loss_compiled_equals_eager():
    a, p, n = (gc.tensor(x, requires_grad=True) for x in _triplets())
    f = gc.compile(lambda a, p, n: gc.nn.functional.triplet_margin_loss(a, p, n, swap=True))
    for _ in range(2):
        np.testing.assert_allclose(f(a, p, n).item(),
                                   gc.nn.functional.triplet_margin_loss(a, p, n, swap=True).item(),
                                   rtol=1e-6)


def test_rrelu_eval_matches_torch_and_training_draws_slopes():
    x = np.random.default_rng(1).standard_normal(2000).astype(np.float32)
    np.testing.assert_allclose(gc.nn.RReLU().eval()(gc.tensor(x)).numpy(),
                               torch.nn.RReLU().eval()(torch.tensor(x)).numpy())
    layer = gc.nn.RReLU(0.1, 0.3).train()
    gc.manual_seed(0)
    y1 = layer(gc.tensor(x)).numpy()
    y2 = layer(gc.tensor(x)).numpy()
    neg = x < 0
    slopes = y1[neg] / x[neg]
    assert 0.1 <= slopes.min() and slopes.max() <= 0.3 and slopes.std() > 0.03
    np.testing.assert_array_equal(y1[~neg], x[~neg])
    assert not np.array_equal(y1, y2)  # fresh slopes on every call
    gc.manual_seed(0)
    np.testing.assert_array_equal(layer(gc.tensor(x)).numpy(), y1)  # reproducible
    with pytest.raises(RuntimeError, match="not implemented for 'Int64'"):
        gc.nn.functional.rrelu(gc.tensor([1, -2]))


def test_rrelu_training_compiled_draws_fresh_slopes_with_gradients():
    layer = gc.nn.RReLU().train()
    f = gc.compile(lambda x: layer(x))
    x = gc.tensor(-np.ones(500, np.float32), requires_grad=True)
    outs = [f(x) for _ in range(3)]
    assert len(f.graph_breaks) == 0 and f.entries
    assert not np.array_equal(outs[1].detach().numpy(), outs[2].detach().numpy())
    outs[2].sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), -outs[2].detach().numpy(), rtol=1e-6)
