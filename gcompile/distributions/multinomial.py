"""The multinomial distribution: counts of ``total_count`` categorical draws."""
from __future__ import annotations

import math
from typing import Any

from .._tensor import Size, Tensor
from . import constraints
from .categorical import Categorical
from .distribution import Distribution
from .utils import lgamma_const, probs_to_logits, softplus

__all__ = ["Multinomial"]


class Multinomial(Distribution):
    """Counts per class after ``total_count`` independent draws from
    Categorical(probs or logits); the event is the count vector."""

    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real_vector}

    def __init__(self, total_count: int = 1, probs: Any = None, logits: Any = None,
                 validate_args: bool | None = None) -> None:
        if not isinstance(total_count, int) or isinstance(total_count, bool):
            raise NotImplementedError("inhomogeneous total_count is not supported")
        if total_count < 0:
            raise ValueError(f"total_count must be non-negative, got {total_count}")
        self.total_count = total_count
        self._categorical = Categorical(probs=probs, logits=logits, validate_args=validate_args)
        batch_shape = self._categorical.batch_shape
        event_shape = self._categorical.param_shape[-1:]
        super().__init__(batch_shape, event_shape, validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self) -> constraints.Constraint:
        return constraints.multinomial(self.total_count)

    @property
    def probs(self) -> Tensor:
        return self._categorical.probs

    @property
    def logits(self) -> Tensor:
        return self._categorical.logits

    @property
    def param_shape(self) -> Size:
        return self._categorical.param_shape

    @property
    def mean(self) -> Tensor:
        return self.probs * self.total_count

    @property
    def variance(self) -> Tensor:
        return self.total_count * self.probs * (1 - self.probs)

    def sample(self, sample_shape: Any = Size(), *, generator: Any = None) -> Tensor:
        from .._creation import ones_like, zeros
        from ..autograd import no_grad
        shape = self._extended_shape(sample_shape)
        sample_shape = Size(shape[:len(shape) - len(self._batch_shape) - 1])
        with no_grad():
            samples = self._categorical.sample(Size((self.total_count,)) + sample_shape,
                                               generator=generator)
            # (total_count, *sample_shape, *batch_shape) -> (*sample_shape, *batch, total_count)
            order = list(range(1, samples.dim())) + [0]
            samples = samples.permute(*order)
            counts = zeros(tuple(self._extended_shape(sample_shape)), dtype=samples.dtype)
            counts.scatter_add_(-1, samples, ones_like(samples))
            return counts.type_as(self.probs)

    def log_prob(self, value: Tensor) -> Tensor:
        from .._functions import broadcast_tensors
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_tensors(self.logits, value)
        log_factorial_n = lgamma_const(value.sum(-1) + 1)
        log_factorial_xs = lgamma_const(value + 1).sum(-1)
        zero_mask = (value == 0) & (logits == float("-inf"))
        logits = logits.masked_fill(zero_mask, 0.0)
        log_powers = (logits * value).sum(-1)
        return log_factorial_n - log_factorial_xs + log_powers

    def entropy(self) -> Tensor:
        """n H(categorical) - log n! + sum_i E[log x_i!] (x_i ~ Binomial(n, p_i))."""
        from .._creation import arange
        n = self.total_count
        cat_entropy = self._categorical.entropy()
        term1 = n * cat_entropy - math.lgamma(n + 1)
        if n == 0:
            return term1
        k = arange(1, n + 1, dtype=self.logits.dtype).view((-1,) + (1,) * len(
            self._batch_shape) + (1,))
        # class i's count is Binomial(n, p_i), with logit log p_i - log(1 - p_i)
        blogits = probs_to_logits(self.probs, is_binary=True)
        log_norm = n * softplus(blogits)
        log_comb = math.lgamma(n + 1) - lgamma_const(k + 1) - lgamma_const(n - k + 1)
        binom_log_prob = log_comb + k * blogits - log_norm
        weights = lgamma_const(k + 1)
        term2 = (binom_log_prob.exp() * weights).sum(0).sum(-1)
        return term1 + term2
