"""AdaptiveLogSoftmaxWithLoss against torch: outputs, loss, gradients, log_prob, predict."""
import numpy as np
import pytest

import gcompile as gc

torch = pytest.importorskip("torch", reason="the reference is torch's module")


def _pair(head_bias):
    tm = torch.nn.AdaptiveLogSoftmaxWithLoss(8, 10, [3, 6], div_value=2.0,
                                             head_bias=head_bias).double()
    gm = gc.nn.AdaptiveLogSoftmaxWithLoss(8, 10, [3, 6], div_value=2.0,
                                          head_bias=head_bias).double()
    gm.load_state_dict({k: gc.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    return tm, gm


@pytest.mark.parametrize("head_bias", [False, True])
def test_matches_torch(head_bias):
    tm, gm = _pair(head_bias)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 8))
    y = np.array([0, 2, 3, 5, 6, 9, 1, 7, 4])
    xt, xg = torch.tensor(x, requires_grad=True), gc.tensor(x, requires_grad=True)
    ot, og = tm(xt, torch.tensor(y)), gm(xg, gc.tensor(y))
    ot.loss.backward()
    og.loss.backward()
    np.testing.assert_allclose(og.output.detach().numpy(), ot.output.detach().numpy(),
                               rtol=1e-12)
    assert og.loss.item() == pytest.approx(ot.loss.item(), rel=1e-12)
    np.testing.assert_allclose(xg.grad.numpy(), xt.grad.numpy(), atol=1e-12)
    for (n, p), (m, q) in zip(tm.named_parameters(), gm.named_parameters()):
        assert n == m
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(gm.log_prob(gc.tensor(x)).detach().numpy(),
                               tm.log_prob(torch.tensor(x)).detach().numpy(), atol=1e-12)
    np.testing.assert_array_equal(gm.predict(gc.tensor(x)).numpy(),
                                  tm.predict(torch.tensor(x)).numpy())
    one = gm(gc.tensor(x[0]), gc.tensor(y[0]))
    want = tm(torch.tensor(x[0]), torch.tensor(y[0])).output.detach()
    assert float(one.output.detach()) == pytest.approx(float(want))


def test_errors():
    with pytest.raises(ValueError, match="cutoffs should be a sequence"):
        gc.nn.AdaptiveLogSoftmaxWithLoss(8, 10, [6, 3])
    m = gc.nn.AdaptiveLogSoftmaxWithLoss(8, 10, [3, 6])
    with pytest.raises(RuntimeError, match="should be in \\[0, 9\\]"):
        m(gc.randn(2, 8), gc.tensor([0, 10]))
    with pytest.raises(RuntimeError, match="same size in the batch"):
        m(gc.randn(2, 8), gc.tensor([0, 1, 2]))
