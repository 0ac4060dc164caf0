"""LazyLinear, LazyBatchNorm1-3d and LazyInstanceNorm1-3d: sized by the first input or a
loaded state dict, then the plain class, matching torch."""
import numpy as np
import pytest

import gcompile as gc

torch = pytest.importorskip("torch", reason="the references are torch's own layers")


def test_lazy_linear_materialises_from_input_and_from_state():
    lin = gc.nn.LazyLinear(5)
    assert lin.has_uninitialized_params()
    y = lin(gc.randn(3, 7))
    assert type(lin) is gc.nn.Linear and tuple(lin.weight.shape) == (5, 7)
    assert tuple(y.shape) == (3, 5) and lin.in_features == 7
    src = gc.nn.Linear(7, 5)
    lazy = gc.nn.LazyLinear(5)
    lazy.load_state_dict(src.state_dict())
    x = gc.randn(2, 7)
    np.testing.assert_array_equal(lazy(x).detach().numpy(), src(x).detach().numpy())


def test_a_lazy_model_trains_and_compiles():
    m = gc.nn.Sequential(gc.nn.LazyLinear(4), gc.nn.ReLU(), gc.nn.LazyLinear(2))
    m(gc.randn(3, 5))
    assert [tuple(p.shape) for p in m.parameters()] == [(4, 5), (4,), (2, 4), (2,)]
    cm = gc.compile(m)
    x = gc.randn(3, 5)
    np.testing.assert_allclose(cm(x).detach().numpy(), m(x).detach().numpy(), rtol=1e-6)


@pytest.mark.parametrize("cls,shape", [("LazyBatchNorm1d", (4, 3)), ("LazyBatchNorm1d", (4, 3, 6)),
                                       ("LazyBatchNorm2d", (4, 3, 5, 5)),
                                       ("LazyBatchNorm3d", (2, 3, 3, 3, 3)),
                                       ("LazyInstanceNorm1d", (2, 3, 6)),
                                       ("LazyInstanceNorm2d", (2, 3, 5, 5)),
                                       ("LazyInstanceNorm3d", (2, 3, 4, 4, 4))])
def test_lazy_norms_match_torch(cls, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    kw = {"affine": True, "track_running_stats": True}
    t, g = getattr(torch.nn, cls)(**kw), getattr(gc.nn, cls)(**kw)
    a, b = t(torch.tensor(x)), g(gc.tensor(x))
    assert type(g).__name__ == cls.replace("Lazy", "") and g.num_features == t.num_features
    np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g.running_var.numpy(), t.running_var.numpy(), rtol=1e-5)
    assert sorted(n for n, _ in g.named_parameters()) == sorted(
        n for n, _ in t.named_parameters())


def test_lazy_norm_from_state_dict_and_unbatched_instance_norm():
    bn = gc.nn.LazyBatchNorm1d()
    src = gc.nn.BatchNorm1d(6)
    src.running_mean.fill_(0.5)
    bn.load_state_dict(src.state_dict())
    assert type(bn) is gc.nn.BatchNorm1d and bn.num_features == 6
    np.testing.assert_array_equal(bn.running_mean.numpy(), np.full(6, 0.5, np.float32))
    inorm = gc.nn.LazyInstanceNorm2d()
    assert tuple(inorm(gc.randn(3, 5, 5)).shape) == (3, 5, 5) and inorm.num_features == 3
