"""nn.Module: registration, traversal order, state_dict, modes, repr, containers."""
import numpy as np
import pytest

import gcompile as torch
import gcompile.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.own = nn.Parameter(torch.zeros(2))
        self.fc1 = nn.Linear(3, 4)
        self.register_buffer("steps", torch.tensor(0))
        self.register_buffer("scratch", torch.zeros(1), persistent=False)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(self.fc1(x).relu()) + self.own


def test_parameter_shares_memory_and_is_leaf():
    t = torch.ones(3)
    p = nn.Parameter(t)
    assert isinstance(p, torch.Tensor) and isinstance(p, nn.Parameter)
    assert p.is_leaf and p.requires_grad and p.grad_fn is None
    p.data[0] = 5.0
    assert t[0].item() == 5.0
    assert repr(nn.Parameter(torch.tensor([1.0, 2.0]))) == \
        "Parameter containing:\ntensor([1., 2.], requires_grad=True)"
    assert not nn.Parameter(torch.ones(1), requires_grad=False).requires_grad
    with pytest.raises(RuntimeError, match="floating point"):
        nn.Parameter(torch.tensor([1, 2]))
    # a non-leaf becomes a leaf parameter
    q = nn.Parameter(torch.ones(2, requires_grad=True) * 2)
    assert q.is_leaf


def test_named_parameters_order_own_before_children():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["own", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert [n for n, _ in net.named_buffers()] == ["steps", "scratch"]
    assert [n for n, _ in net.named_children()] == ["fc1", "fc2"]
    assert [n for n, _ in net.named_modules()] == ["", "fc1", "fc2"]
    assert len(list(net.parameters())) == 5
    assert [n for n, _ in net.named_parameters(recurse=False)] == ["own"]
    assert [n for n, _ in net.named_parameters(prefix="m")][0] == "m.own"


def test_state_dict_keys_order_and_persistence():
    net = Net()
    sd = net.state_dict()
    assert list(sd) == ["own", "steps", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert not sd["fc1.weight"].requires_grad
    assert np.shares_memory(sd["fc1.weight"].numpy(), net.fc1.weight.detach().numpy())
    assert sd["fc1.weight"].requires_grad is False
    kv = net.state_dict(keep_vars=True)
    assert kv["fc1.weight"] is net.fc1.weight


def test_load_state_dict_roundtrip_and_errors():
    a, b = Net(), Net()
    res = b.load_state_dict(a.state_dict())
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert repr(res) == "<All keys matched successfully>"
    assert np.array_equal(a.fc1.weight.detach().numpy(), b.fc1.weight.detach().numpy())
    sd = a.state_dict()
    del sd["fc2.bias"]
    sd["extra"] = torch.zeros(1)
    with pytest.raises(RuntimeError) as e:
        b.load_state_dict(sd)
    msg = str(e.value)
    assert msg.startswith("Error(s) in loading state_dict for Net:\n\t")
    assert 'Missing key(s) in state_dict: "fc2.bias". ' in msg
    assert 'Unexpected key(s) in state_dict: "extra". ' in msg
    assert msg.index("Missing") < msg.index("Unexpected")
    res = b.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["fc2.bias"] and res.unexpected_keys == ["extra"]
    bad = a.state_dict()
    bad["fc1.weight"] = torch.zeros(5, 3)
    with pytest.raises(RuntimeError, match=r"size mismatch for fc1\.weight: copying a param with "
                       r"shape torch\.Size\(\[5, 3\]\) from checkpoint, the shape in current "
                       r"model is torch\.Size\(\[4, 3\]\)"):
        b.load_state_dict(bad, strict=False)


def test_parameter_sharing_deduplicated():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(seq.parameters())) == 2
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias"]
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert len(list(seq.modules())) == 3
    x = torch.randn(3, 2)
    seq(x).sum().backward()
    # gradient of both uses accumulates into the one parameter
    w = lin.weight.detach().numpy()
    h = np.maximum(x.numpy() @ w.T + lin.bias.detach().numpy(), 0)
    gh = np.ones((3, 2)) @ w * (h > 0)
    gw = np.ones((3, 2)).T @ h + gh.T @ x.numpy()
    assert np.allclose(lin.weight.grad.numpy(), gw, atol=1e-5)
    # tied weights between modules
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight
    both = nn.ModuleList([a, b])
    assert [n for n, _ in both.named_parameters()] == ["0.weight", "0.bias", "1.bias"]


def test_train_eval_apply_zero_grad_freeze():
    net = Net()
    assert net.training and net.fc1.training
    assert net.eval() is net and not net.fc1.training
    net.train()
    assert net.fc2.training
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Linear", "Linear", "Net"]
    net(torch.randn(2, 3)).sum().backward()
    assert net.fc1.weight.grad is not None
    net.zero_grad()
    assert net.fc1.weight.grad is None
    net(torch.randn(2, 3)).sum().backward()
    net.zero_grad(set_to_none=False)
    assert net.fc1.weight.grad.abs().sum().item() == 0
    net.fc1.requires_grad_(False)
    assert not net.fc1.weight.requires_grad and net.fc2.weight.requires_grad
    net.zero_grad()
    net(torch.randn(2, 3)).sum().backward()
    assert net.fc1.weight.grad is None and net.fc2.weight.grad is not None


def test_to_dtype_keeps_parameter_objects():
    net = Net()
    w = net.fc1.weight
    net.to(torch.float64)
    assert net.fc1.weight is w and w.dtype is torch.float64 and isinstance(w, nn.Parameter)
    assert net.steps.dtype is torch.int64
    assert net.to("cpu") is net
    net.float()
    assert w.dtype is torch.float32
    out = net.double()(torch.randn(2, 3, dtype=torch.float64))
    assert out.dtype is torch.float64


def test_attribute_rules():
    m = nn.Module()
    with pytest.raises(TypeError, match="cannot assign"):
        m.register_parameter("w", torch.ones(2))
    m.w = nn.Parameter(torch.ones(2))
    with pytest.raises(TypeError):
        m.w = torch.ones(2)
    m.w = None
    assert m.w is None and list(m.parameters()) == []
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = m.nope
    m.sub = nn.Linear(1, 1)
    del m.sub
    assert list(m.children()) == []
    with pytest.raises(KeyError):
        m.register_buffer("a.b", torch.ones(1))

    class NoInit(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(torch.ones(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        NoInit()
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(1)


def test_repr_like_torch():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
                        nn.Sequential(nn.Flatten(), nn.Linear(8, 2, bias=False)))
    assert repr(net) == (
        "Sequential(\n"
        "  (0): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))\n"
        "  (1): ReLU(inplace=True)\n"
        "  (2): Sequential(\n"
        "    (0): Flatten(start_dim=1, end_dim=-1)\n"
        "    (1): Linear(in_features=8, out_features=2, bias=False)\n"
        "  )\n"
        ")")
    ml = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)] + [nn.ReLU()])
    assert repr(ml) == ("ModuleList(\n  (0-2): 3 x Linear(in_features=2, out_features=2, "
                        "bias=True)\n  (3): ReLU()\n)")
    assert repr(nn.Dropout(0.2)) == "Dropout(p=0.2, inplace=False)"
    assert repr(nn.BatchNorm2d(4)) == ("BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, "
                                       "track_running_stats=True)")
    assert repr(nn.LSTM(10, 20, 2, batch_first=True)) == \
        "LSTM(10, 20, num_layers=2, batch_first=True)"
    assert repr(nn.MaxPool2d(2)) == \
        "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    assert repr(nn.Embedding(10, 3, padding_idx=0)) == "Embedding(10, 3, padding_idx=0)"
    assert repr(nn.LayerNorm(4)) == "LayerNorm((4,), eps=1e-05, elementwise_affine=True)"


def test_sequential_containers():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    s = nn.Sequential(a, b, c)
    assert s[0] is a and s[-1] is c and len(s) == 3
    assert isinstance(s[1:], nn.Sequential) and s[1:][0] is b
    s.add_module("extra", nn.Identity())
    assert list(s._modules) == ["0", "1", "2", "extra"]
    from collections import OrderedDict
    named = nn.Sequential(OrderedDict([("first", a), ("act", b)]))
    assert named.first is a and named[1] is b
    x = torch.randn(4, 2)
    assert np.allclose(s(x).detach().numpy(), c(b(a(x))).detach().numpy())
    s.append(nn.Sigmoid())
    assert len(s) == 5
    with pytest.raises(IndexError):
        s[7]
    ml = nn.ModuleList([a])
    ml.append(c)
    ml.extend([b])
    ml.insert(0, nn.Tanh())
    assert [type(m).__name__ for m in ml] == ["Tanh", "Linear", "Linear", "ReLU"]
    assert len(list(ml.parameters())) == 4
    del ml[0]
    assert isinstance(ml[0], nn.Linear) and list(ml._modules) == ["0", "1", "2"]
    md = nn.ModuleDict({"enc": a, "dec": c})
    assert list(md.keys()) == ["enc", "dec"] and md["dec"] is c and "enc" in md
    assert [n for n, _ in md.named_parameters()] == ["enc.weight", "enc.bias", "dec.weight",
                                                     "dec.bias"]
    pl = nn.ParameterList([torch.ones(2), nn.Parameter(torch.zeros(1))])
    assert len(list(pl.parameters())) == 2 and isinstance(pl[0], nn.Parameter)


def test_forward_hooks_and_submodule_lookup():
    net = Net()
    calls = []
    h = net.fc1.register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape)))
    net(torch.randn(5, 3))
    h.remove()
    net(torch.randn(5, 3))
    assert calls == [(5, 4)]
    assert net.get_submodule("fc2") is net.fc2
    assert net.get_parameter("fc2.bias") is net.fc2.bias
    net.register_forward_pre_hook(lambda m, i: (i[0] * 0,))
    out = net(torch.randn(2, 3))
    ref = net.fc2(net.fc1(torch.zeros(2, 3)).relu()) + net.own
    assert np.allclose(out.detach().numpy(), ref.detach().numpy())
