"""torch.special: the special functions under their scipy-style names (aliases of the torch
functions, which are registered ops or compositions of them)."""
from __future__ import annotations

import math

from . import _functions as F
from ._tensor import Tensor

__all__ = ["erf", "erfc", "erfinv", "erfcx", "expit", "logit", "exp2", "expm1", "log1p",
           "gammaln", "digamma", "psi", "polygamma", "multigammaln", "xlogy", "xlog1py",
           "sinc", "round", "entr", "ndtr", "ndtri", "log_ndtr", "logsumexp", "softmax",
           "log_softmax", "i0"]

erf = F.erf
erfc = F.erfc
erfinv = F.erfinv
expit = F.sigmoid
logit = F.logit
exp2 = F.exp2
expm1 = F.expm1
log1p = F.log1p
gammaln = F.lgamma
digamma = F.digamma
psi = F.digamma
polygamma = F.polygamma
xlogy = F.xlogy
sinc = F.sinc
round = F.round  # noqa: A001
logsumexp = F.logsumexp


def erfcx(input: Tensor) -> Tensor:  # noqa: A002
    """exp(x^2) erfc(x)."""
    x = F._t(input)
    return F.mul(F.exp(F.mul(x, x)), F.erfc(x))


def xlog1py(input, other) -> Tensor:  # noqa: A002
    """x * log1p(y), 0 where x == 0."""
    x, y = F._t(input), F._t(other)
    return F.where(F.eq(x, 0), 0.0, F.mul(x, F.log1p(y)))


def entr(input: Tensor) -> Tensor:  # noqa: A002
    """-x log x (0 at 0, -inf for x < 0)."""
    x = F._t(input)
    r = F.neg(F.mul(x, F.log(F.where(F.gt(x, 0), x, 1.0))))
    return F.where(F.lt(x, 0), -math.inf, r)


def ndtr(input: Tensor) -> Tensor:  # noqa: A002
    """The standard normal CDF."""
    x = F._float(F._t(input))
    return F.mul(F.erfc(F.mul(x, -1.0 / math.sqrt(2.0))), 0.5)


def ndtri(input: Tensor) -> Tensor:  # noqa: A002
    """The inverse of ndtr."""
    p = F._float(F._t(input))
    return F.mul(F.erfinv(F.sub(F.mul(p, 2.0), 1.0)), math.sqrt(2.0))


def log_ndtr(input: Tensor) -> Tensor:  # noqa: A002
    """log of the standard normal CDF (log of erfc, so the far left tail keeps accuracy
    down to where erfc underflows)."""
    return F.log(ndtr(input))


def multigammaln(input: Tensor, p: int) -> Tensor:  # noqa: A002
    """The multivariate log-gamma function of dimension p."""
    x = F._t(input)
    r = F.mul(F._zeros_like(x), 0.0) if x.dtype.is_floating_point else F._zeros_like(
        x, dtype=F.dt.get_default_dtype())
    r = F.add(r, p * (p - 1) / 4.0 * math.log(math.pi))
    for j in range(p):
        r = F.add(r, F.lgamma(F.sub(x, j / 2.0)))
    return r


def softmax(input: Tensor, dim: int, *, dtype=None) -> Tensor:  # noqa: A002
    from .nn import functional as nnf
    return nnf.softmax(input, dim, dtype=dtype)


def log_softmax(input: Tensor, dim: int, *, dtype=None) -> Tensor:  # noqa: A002
    from .nn import functional as nnf
    return nnf.log_softmax(input, dim, dtype=dtype)


def i0(input: Tensor) -> Tensor:  # noqa: A002
    """Modified Bessel function of order 0, by its power series sum ((x/2)^k / k!)^2 (in ops;
    accurate for |x| up to ~30)."""
    x = F._float(F._t(input))
    q = F.mul(F.mul(x, x), 0.25)
    term = F.add(F.mul(q, 0.0), 1.0)
    total = term
    for k in range(1, 80):
        term = F.div(F.mul(term, q), float(k * k))
        total = F.add(total, term)
    return total
