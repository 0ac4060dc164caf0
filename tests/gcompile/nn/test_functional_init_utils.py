"""F.pad/one_hot, nn.init formulas and generators, default layer init, nn.utils."""
import math

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn as nn
import gcompile.nn.functional as F
from gcompile.autograd import gradcheck

D = torch.float64


def npy(t):
    return t.detach().numpy()


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_modes_against_numpy(mode):
    x = torch.tensor(np.random.default_rng(0).standard_normal((2, 3, 4, 5)), dtype=D,
                     requires_grad=True)
    out = F.pad(x, (2, 1, 1, 3), mode=mode)
    np_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
               "circular": "wrap"}[mode]
    ref = np.pad(npy(x), ((0, 0), (0, 0), (1, 3), (2, 1)), mode=np_mode)
    assert np.allclose(npy(out), ref)
    small = torch.tensor(np.random.default_rng(1).standard_normal((1, 1, 3, 4)), dtype=D,
                         requires_grad=True)
    assert gradcheck(lambda t: F.pad(t, (1, 2, 2, 1), mode=mode), (small,))


def test_pad_value_crop_and_errors():
    x = torch.ones(2, 3)
    assert npy(F.pad(x, (1, 1), value=7.0))[:, 0].tolist() == [7.0, 7.0]
    assert F.pad(x, (-1, 0)).shape == (2, 2)
    with pytest.raises(RuntimeError, match="divisible by 2"):
        F.pad(x, (1,))
    with pytest.raises(RuntimeError, match="Padding size should be less than"):
        F.pad(torch.ones(1, 1, 2), (2, 2), mode="reflect")


def test_one_hot():
    t = torch.tensor([[0, 2], [1, 0]])
    oh = F.one_hot(t, 4)
    assert oh.dtype is torch.int64 and oh.shape == (2, 2, 4)
    assert npy(oh).tolist() == [[[1, 0, 0, 0], [0, 0, 1, 0]], [[0, 1, 0, 0], [1, 0, 0, 0]]]
    assert F.one_hot(torch.tensor([3, 1])).shape == (2, 4)
    with pytest.raises(RuntimeError, match="Class values must be smaller than num_classes"):
        F.one_hot(torch.tensor([5]), 3)


def test_init_functions_follow_formulas_and_generators():
    w = torch.empty(200, 300)
    bound = math.sqrt(6 / 500)
    nn.init.xavier_uniform_(w)
    assert npy(w).max() <= bound and npy(w).min() >= -bound and npy(w).max() > 0.9 * bound
    nn.init.xavier_normal_(w, gain=2.0)
    assert abs(npy(w).std() - 2 * math.sqrt(2 / 500)) < 0.005
    nn.init.kaiming_uniform_(w, a=0, nonlinearity="relu")
    kb = math.sqrt(2) * math.sqrt(3 / 300)
    assert npy(w).max() <= kb and npy(w).max() > 0.95 * kb
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert abs(npy(w).std() - math.sqrt(2 / 200)) < 0.005
    nn.init.normal_(w, 3.0, 0.5)
    assert abs(npy(w).mean() - 3) < 0.01 and abs(npy(w).std() - 0.5) < 0.01
    nn.init.uniform_(w, -2, -1)
    assert npy(w).min() >= -2 and npy(w).max() <= -1
    nn.init.constant_(w, 0.25)
    assert (npy(w) == 0.25).all()
    nn.init.zeros_(w)
    assert not npy(w).any()
    nn.init.ones_(w)
    assert (npy(w) == 1).all()
    a, b = torch.empty(5, 5), torch.empty(5, 5)
    nn.init.kaiming_uniform_(a, generator=torch.Generator().manual_seed(1))
    nn.init.kaiming_uniform_(b, generator=torch.Generator().manual_seed(1))
    assert np.array_equal(npy(a), npy(b))
    assert nn.init.calculate_gain("tanh") == 5 / 3
    assert nn.init.calculate_gain("leaky_relu", 0.2) == math.sqrt(2 / 1.04)
    assert nn.init._calculate_fan_in_and_fan_out(torch.empty(8, 3, 5, 5)) == (75, 200)
    o = torch.empty(4, 6)
    nn.init.orthogonal_(o)
    assert np.allclose(npy(o) @ npy(o).T, np.eye(4), atol=1e-5)
    with pytest.raises(ValueError, match="fewer than 2"):
        nn.init.xavier_uniform_(torch.empty(3))


def test_default_layer_init_matches_torch_formulas():
    torch.manual_seed(0)
    lin = nn.Linear(50, 40)
    bound = 1 / math.sqrt(50)  # kaiming_uniform(a=sqrt(5)) gives exactly 1/sqrt(fan_in)
    assert np.abs(npy(lin.weight)).max() <= bound and np.abs(npy(lin.weight)).max() > 0.95 * bound
    assert np.abs(npy(lin.bias)).max() <= bound
    conv = nn.Conv2d(4, 16, 3)
    cb = 1 / math.sqrt(4 * 9)
    assert np.abs(npy(conv.weight)).max() <= cb and np.abs(npy(conv.bias)).max() <= cb
    lstm = nn.LSTM(10, 25)
    for p in lstm.parameters():
        assert np.abs(npy(p)).max() <= 1 / 5
    emb = nn.Embedding(1000, 20)
    assert abs(npy(emb.weight).std() - 1) < 0.05
    bn = nn.BatchNorm2d(3)
    assert npy(bn.weight).tolist() == [1, 1, 1] and npy(bn.bias).tolist() == [0, 0, 0]
    ln = nn.LayerNorm(3)
    assert npy(ln.weight).tolist() == [1, 1, 1]
    mha = nn.MultiheadAttention(6, 2)
    assert not npy(mha.in_proj_bias).any() and not npy(mha.out_proj.bias).any()
    torch.manual_seed(3)
    a = nn.Linear(3, 3)
    torch.manual_seed(3)
    b = nn.Linear(3, 3)
    assert np.array_equal(npy(a.weight), npy(b.weight))


def test_clip_grad_norm_and_value():
    p1 = nn.Parameter(torch.zeros(3))
    p2 = nn.Parameter(torch.zeros(2))
    p1.grad = torch.tensor([3.0, 0.0, 0.0])
    p2.grad = torch.tensor([0.0, 4.0])
    total = nn.utils.clip_grad_norm_([p1, p2], 1.0)
    assert np.isclose(total.item(), 5.0)
    assert np.allclose(npy(p1.grad), [3 / 5.000001, 0, 0], atol=1e-6)
    assert np.isclose(np.sqrt((npy(p1.grad) ** 2).sum() + (npy(p2.grad) ** 2).sum()), 1.0,
                      atol=1e-5)
    p1.grad = torch.tensor([3.0, -7.0, 0.0])
    assert nn.utils.clip_grad_norm_(p1, 100.0, norm_type="inf").item() == 7.0
    assert npy(p1.grad).tolist() == [3.0, -7.0, 0.0]
    nn.utils.clip_grad_value_([p1], 2.0)
    assert npy(p1.grad).tolist() == [2.0, -2.0, 0.0]
    p1.grad = torch.tensor([float("nan"), 1.0, 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_([p1], 1.0, error_if_nonfinite=True)
    lin = nn.Linear(3, 2)
    vec = nn.utils.parameters_to_vector(lin.parameters())
    assert vec.shape == (8,)
    nn.utils.vector_to_parameters(vec * 0, lin.parameters())
    assert not npy(lin.weight).any()


def test_pad_sequence():
    a = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = torch.tensor([4.0])
    c = torch.tensor([5.0, 6.0])
    out = nn.utils.rnn.pad_sequence([a, b, c])
    assert out.shape == (3, 3)
    assert npy(out).tolist() == [[1, 4, 5], [2, 0, 6], [3, 0, 0]]
    bf = nn.utils.rnn.pad_sequence([a, b, c], batch_first=True, padding_value=-1)
    assert npy(bf).tolist() == [[1, 2, 3], [4, -1, -1], [5, 6, -1]]
    left = nn.utils.rnn.pad_sequence([a, b], batch_first=True, padding_side="left")
    assert npy(left).tolist() == [[1, 2, 3], [0, 0, 4]]
    bf.sum().backward()
    assert npy(a.grad).tolist() == [1, 1, 1]
    seqs = [torch.ones(2, 4), torch.ones(5, 4)]
    assert nn.utils.rnn.pad_sequence(seqs, batch_first=True).shape == (2, 5, 4)
    with pytest.raises(NotImplementedError):
        nn.utils.rnn.pack_padded_sequence(bf, [3, 1, 2])


def test_padding_layers():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    assert np.array_equal(npy(nn.ZeroPad2d((1, 0, 0, 2))(x)),
                          np.pad(npy(x), ((0, 0), (0, 0), (0, 2), (1, 0))))
    assert np.array_equal(npy(nn.ReflectionPad2d(1)(x)),
                          np.pad(npy(x), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect"))
    assert np.array_equal(npy(nn.ReplicationPad1d((2, 1))(x[0])),
                          np.pad(npy(x[0]), ((0, 0), (0, 0), (2, 1)), mode="edge"))
    assert np.array_equal(npy(nn.ConstantPad1d(1, 2.5)(x[0]))[0, 0], [2.5, 0, 1, 2, 2.5])
    assert repr(nn.ZeroPad2d(1)) == "ZeroPad2d((1, 1, 1, 1))"
    assert repr(nn.ConstantPad1d(2, 3.5)) == "ConstantPad1d(padding=(2, 2), value=3.5)"
    with pytest.raises(ValueError, match="ZeroPad2d expected 3D or 4D input"):
        nn.ZeroPad2d(1)(torch.ones(3))
