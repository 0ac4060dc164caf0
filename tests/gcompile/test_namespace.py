"""Names typical torch programs reach for exist and agree with their nn.functional forms."""
from __future__ import annotations

import numpy as np

import gcompile as torch
import gcompile.nn.functional as F


def test_softmax_spellings_agree():
    x = torch.randn(3, 5)
    ref = np.exp(x.numpy()) / np.exp(x.numpy()).sum(1, keepdims=True)
    for y in (torch.softmax(x, 1), x.softmax(1), x.softmax(dim=-1), F.softmax(x, 1)):
        np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(x.log_softmax(1).numpy(), np.log(ref), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(torch.log_softmax(x, 1).numpy(), np.log(ref), rtol=1e-5,
                               atol=1e-6)


def test_softmax_has_a_gradient():
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: t.softmax(-1) * torch.arange(4.0).double(), (x,))
