"""Distributions: closed forms, 100k-sample moments within statistical bounds,
rsample gradients, shapes and argument validation."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import gcompile as torch
from gcompile.distributions import (Bernoulli, Categorical, Multinomial, Normal, Uniform,
                                    kl_divergence)

N = 100_000


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def within(sample_mean, mean, var, n=N, z=5.0):
    """|sample mean - mean| below z standard errors."""
    return np.all(np.abs(np.asarray(sample_mean) - mean) <= z * np.sqrt(np.asarray(var) / n)
                  + 1e-12)


# ---- Normal -------------------------------------------------------------------------------
def test_normal_closed_forms():
    loc = np.array([0.0, 1.5, -2.0])
    scale = np.array([1.0, 0.5, 3.0])
    d = Normal(torch.tensor(loc), torch.tensor(scale))
    x = np.array([0.3, 1.0, 4.0])
    want = -((x - loc) ** 2) / (2 * scale ** 2) - np.log(scale) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(d.log_prob(torch.tensor(x)).numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(d.entropy().numpy(), 0.5 * np.log(2 * np.pi * np.e * scale ** 2),
                               rtol=1e-12)
    np.testing.assert_allclose(d.mean.numpy(), loc)
    np.testing.assert_allclose(d.variance.numpy(), scale ** 2)
    np.testing.assert_allclose(d.stddev.numpy(), scale)
    cdf = d.cdf(torch.tensor(x)).numpy()
    np.testing.assert_allclose(cdf, [0.5 * (1 + math.erf((a - m) / (s * math.sqrt(2))))
                                     for a, m, s in zip(x, loc, scale)], rtol=1e-7)
    assert d.batch_shape == torch.Size([3]) and d.event_shape == torch.Size([])


def test_normal_sample_moments_and_generator():
    d = Normal(torch.tensor([1.0, -3.0]), torch.tensor([2.0, 0.5]))
    s = d.sample((N,), generator=gen(1))
    assert s.shape == (N, 2) and s.dtype is torch.float32 and not s.requires_grad
    arr = s.numpy().astype(np.float64)
    assert within(arr.mean(0), [1.0, -3.0], [4.0, 0.25])
    # sample variance: sd of s^2 estimate ~ sigma^2 * sqrt(2/n)
    assert np.all(np.abs(arr.var(0) - [4.0, 0.25]) < 5 * np.array([4.0, 0.25]) * math.sqrt(2 / N))
    again = d.sample((N,), generator=gen(1))
    assert torch.equal(s, again)
    assert Normal(0.0, 1.0).sample().shape == ()


def test_normal_rsample_gradients():
    loc = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    d = Normal(loc, scale)
    x = d.rsample((1000,), generator=gen(2))
    assert x.requires_grad
    x.sum().backward()
    eps = (x.detach() - loc.detach()) / scale.detach()
    np.testing.assert_allclose(loc.grad.numpy(), [1000.0, 1000.0])
    np.testing.assert_allclose(scale.grad.numpy(), eps.sum(0).numpy(), rtol=1e-10)


def test_normal_log_prob_gradient_matches_closed_form():
    loc = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    x = 1.1
    Normal(loc, scale).log_prob(torch.tensor(x, dtype=torch.float64)).backward()
    assert loc.grad.item() == pytest.approx((x - 0.3) / 1.7 ** 2)
    assert scale.grad.item() == pytest.approx((x - 0.3) ** 2 / 1.7 ** 3 - 1 / 1.7)


def test_normal_validation_messages():
    with pytest.raises(ValueError, match=r"Expected parameter scale \(Tensor of shape \(2,\)\) "
                                         r"of distribution Normal\(loc: torch.Size\(\[2\]\), "
                                         r"scale: torch.Size\(\[2\]\)\) to satisfy the "
                                         r"constraint GreaterThan\(lower_bound=0.0\)"):
        Normal(torch.zeros(2), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="constraint Real"):
        Normal(torch.tensor([float("nan")]), torch.ones(1))
    Normal(torch.zeros(2), torch.tensor([1.0, -1.0]), validate_args=False)  # allowed
    d = Normal(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="must be a Tensor"):
        d.log_prob(0.5)
    with pytest.raises(ValueError, match="not broadcastable"):
        d.log_prob(torch.zeros(2))


# ---- Uniform ------------------------------------------------------------------------------
def test_uniform_closed_forms_moments_and_support():
    d = Uniform(torch.tensor([0.0, -2.0]), torch.tensor([1.0, 6.0]))
    np.testing.assert_allclose(d.mean.numpy(), [0.5, 2.0])
    np.testing.assert_allclose(d.variance.numpy(), [1 / 12, 64 / 12], rtol=1e-6)
    np.testing.assert_allclose(d.entropy().numpy(), [0.0, math.log(8)], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(d.log_prob(torch.tensor([0.5, 0.0])).numpy(),
                               [0.0, -math.log(8)], rtol=1e-6, atol=1e-7)
    s = d.sample((N,), generator=gen(3)).numpy().astype(np.float64)
    assert s.min(0)[1] >= -2.0 and np.all(s.max(0) < [1.0, 6.0])
    assert within(s.mean(0), [0.5, 2.0], [1 / 12, 64 / 12])
    with pytest.raises(ValueError, match="to be within the support"):
        d.log_prob(torch.tensor([1.5, 0.0]))
    lenient = Uniform(0.0, 1.0, validate_args=False)
    assert lenient.log_prob(torch.tensor(2.0)).item() == float("-inf")
    with pytest.raises(ValueError, match="low >= high"):
        Uniform(torch.tensor([1.0]), torch.tensor([1.0]))


def test_uniform_rsample_gradients():
    low = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    high = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    x = Uniform(low, high).rsample((500,), generator=gen(4))
    x.sum().backward()
    u = (x.detach() - 1.0) / 2.0
    assert high.grad.item() == pytest.approx(u.sum().item())
    assert low.grad.item() == pytest.approx(500 - u.sum().item())


# ---- Bernoulli ----------------------------------------------------------------------------
def test_bernoulli_probs_and_logits_agree():
    p = np.array([0.1, 0.5, 0.9])
    a = Bernoulli(probs=torch.tensor(p))
    b = Bernoulli(logits=torch.tensor(np.log(p / (1 - p))))
    x = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    want = np.log(np.where(x.numpy() == 1, p, 1 - p))
    np.testing.assert_allclose(a.log_prob(x).numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(b.log_prob(x).numpy(), want, rtol=1e-12)
    h = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    np.testing.assert_allclose(a.entropy().numpy(), h, rtol=1e-10)
    np.testing.assert_allclose(b.entropy().numpy(), h, rtol=1e-10)
    np.testing.assert_allclose(b.probs.numpy(), p, rtol=1e-12)
    np.testing.assert_allclose(a.variance.numpy(), p * (1 - p))
    s = a.sample((N,), generator=gen(5)).numpy()
    assert set(np.unique(s)) <= {0.0, 1.0}
    assert within(s.mean(0), p, p * (1 - p))
    with pytest.raises(ValueError, match="Either `probs` or `logits`"):
        Bernoulli(probs=torch.tensor(0.5), logits=torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"Interval\(lower_bound=0.0, upper_bound=1.0\)"):
        Bernoulli(probs=torch.tensor([1.5]))
    with pytest.raises(ValueError, match="support"):
        a.log_prob(torch.tensor([2.0, 0.0, 1.0]))


def test_bernoulli_log_prob_gradient_wrt_logits():
    logits = torch.tensor([0.3, -2.0], dtype=torch.float64, requires_grad=True)
    Bernoulli(logits=logits).log_prob(torch.tensor([1.0, 0.0], dtype=torch.float64)).sum() \
        .backward()
    sig = 1 / (1 + np.exp(-np.array([0.3, -2.0])))
    np.testing.assert_allclose(logits.grad.numpy(), [1 - sig[0], -sig[1]], rtol=1e-10)


# ---- Categorical --------------------------------------------------------------------------
def test_categorical_closed_forms_and_frequencies():
    p = np.array([[0.2, 0.3, 0.5], [0.7, 0.1, 0.2]])
    d = Categorical(probs=torch.tensor(p * 4))  # unnormalised probs are normalised
    assert d.batch_shape == torch.Size([2]) and d.event_shape == torch.Size([])
    np.testing.assert_allclose(d.probs.numpy(), p, rtol=1e-12)
    v = torch.tensor([2, 0])
    np.testing.assert_allclose(d.log_prob(v).numpy(), np.log([0.5, 0.7]), rtol=1e-12)
    np.testing.assert_allclose(d.entropy().numpy(), -(p * np.log(p)).sum(-1), rtol=1e-12)
    lg = Categorical(logits=torch.tensor(np.log(p) + 3.0))
    np.testing.assert_allclose(lg.probs.numpy(), p, rtol=1e-12)
    np.testing.assert_allclose(lg.log_prob(v).numpy(), np.log([0.5, 0.7]), rtol=1e-12)
    s = d.sample((N,), generator=gen(6))
    assert s.shape == (N, 2) and s.dtype is torch.int64
    for row in range(2):
        freq = np.bincount(s.numpy()[:, row], minlength=3) / N
        assert within(freq, p[row], p[row] * (1 - p[row]))
    with pytest.raises(ValueError, match="Simplex"):
        Categorical(probs=torch.tensor([0.5, -0.1, 0.6]))
    with pytest.raises(ValueError, match=r"IntegerInterval\(lower_bound=0, upper_bound=2\)"):
        d.log_prob(torch.tensor([3, 0]))


def test_categorical_log_prob_gradient():
    logits = torch.tensor([0.1, 0.5, -1.0], dtype=torch.float64, requires_grad=True)
    Categorical(logits=logits).log_prob(torch.tensor(1)).backward()
    sm = np.exp([0.1, 0.5, -1.0]) / np.exp([0.1, 0.5, -1.0]).sum()
    np.testing.assert_allclose(logits.grad.numpy(), np.eye(3)[1] - sm, rtol=1e-10)


# ---- Multinomial --------------------------------------------------------------------------
def test_multinomial_closed_forms_and_samples():
    p = np.array([0.2, 0.3, 0.5])
    n = 6
    d = Multinomial(n, probs=torch.tensor(p))
    assert d.event_shape == torch.Size([3]) and d.batch_shape == torch.Size([])
    x = np.array([1.0, 2.0, 3.0])
    want = (math.lgamma(7) - sum(math.lgamma(k + 1) for k in x) + (x * np.log(p)).sum())
    assert d.log_prob(torch.tensor(x)).item() == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(d.mean.numpy(), n * p)
    np.testing.assert_allclose(d.variance.numpy(), n * p * (1 - p))
    # entropy against brute-force enumeration of all count vectors
    h = 0.0
    for a, b in itertools.product(range(n + 1), repeat=2):
        c = n - a - b
        if c < 0:
            continue
        lp = math.lgamma(7) - math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(c + 1) + \
            a * math.log(p[0]) + b * math.log(p[1]) + c * math.log(p[2])
        h -= math.exp(lp) * lp
    assert d.entropy().item() == pytest.approx(h, rel=1e-9)
    s = d.sample((N // 10,), generator=gen(7))
    assert s.shape == (N // 10, 3) and s.dtype is torch.float64
    assert np.all(s.numpy().sum(-1) == n)
    assert within(s.numpy().mean(0), n * p, n * p * (1 - p), n=N // 10)
    with pytest.raises(ValueError, match="support"):
        d.log_prob(torch.tensor([5.0, 2.0, 3.0]))


# ---- KL -------------------------------------------------------------------------------------
def test_kl_normal_normal_and_others():
    p = Normal(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]))
    q = Normal(torch.tensor([0.5, -1.0]), torch.tensor([1.5, 1.0]))
    m1, s1, m2, s2 = (np.array(v) for v in ([0.0, 1.0], [1.0, 2.0], [0.5, -1.0], [1.5, 1.0]))
    want = np.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5
    np.testing.assert_allclose(kl_divergence(p, q).numpy(), want, rtol=1e-6)
    assert kl_divergence(p, p).abs().max().item() < 1e-7
    a, b = Bernoulli(probs=torch.tensor(0.3)), Bernoulli(probs=torch.tensor(0.6))
    want = 0.3 * math.log(0.3 / 0.6) + 0.7 * math.log(0.7 / 0.4)
    assert kl_divergence(a, b).item() == pytest.approx(want, rel=1e-5)
    c1, c2 = Categorical(probs=torch.tensor([0.2, 0.8])), Categorical(probs=torch.tensor([0.5,
                                                                                          0.5]))
    assert kl_divergence(c1, c2).item() == pytest.approx(
        0.2 * math.log(0.4) + 0.8 * math.log(1.6), rel=1e-5)
    with pytest.raises(NotImplementedError, match="No KL"):
        kl_divergence(p, a)


def test_expand_keeps_parameters():
    for d in (Normal(torch.tensor([0.0, 1.0]), 1.0), Uniform(torch.zeros(2), 1.0),
              Bernoulli(probs=torch.tensor([0.2, 0.7])),
              Bernoulli(logits=torch.tensor([0.2, 0.7])),
              Categorical(probs=torch.tensor([[0.2, 0.8], [0.5, 0.5]]))):
        e = d.expand((3, 2))
        assert e.batch_shape == torch.Size([3, 2]) and type(e) is type(d)
        assert e.sample().shape == (3, 2)
        np.testing.assert_allclose(e.mean.numpy()[1], d.mean.numpy())
