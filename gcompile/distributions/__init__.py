"""Probability distributions (torch.distributions): sampling with optional
``generator=``, reparameterised ``rsample``, ``log_prob``, ``entropy``,
moments, argument validation and ``kl_divergence``."""
from __future__ import annotations

from . import constraints
from .bernoulli import Bernoulli
from .categorical import Categorical
from .distribution import Distribution
from .kl import kl_divergence, register_kl
from .multinomial import Multinomial
from .normal import Normal
from .uniform import Uniform

__all__ = ["Distribution", "Normal", "Uniform", "Bernoulli", "Categorical", "Multinomial",
           "kl_divergence", "register_kl", "constraints"]
