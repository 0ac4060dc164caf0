"""A d2l-style training script end to end: synthetic data, an MLP,
CrossEntropyLoss, Adam, a shuffling DataLoader, StepLR, and a checkpoint
saved mid-run and resumed. The resumed run must match the uninterrupted
one exactly (same losses, same parameters, same optimiser state)."""
from __future__ import annotations

import numpy as np

import gcompile as torch
from gcompile import nn
from gcompile.utils.data import DataLoader, TensorDataset, random_split

EPOCHS = 6


def synthetic_data(n=240, seed=0):
    """Three Gaussian blobs in 2-D, labelled by blob."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]])
    y = torch.randint(0, 3, (n,), generator=g)
    x = centers[y] + 0.7 * torch.randn(n, 2, generator=g)
    return TensorDataset(x, y)


def build(seed=1):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return net, opt, sched


def loaders(shuffle_gen):
    train, val = random_split(synthetic_data(), [0.8, 0.2],
                              generator=torch.Generator().manual_seed(42))
    return (DataLoader(train, batch_size=32, shuffle=True, generator=shuffle_gen),
            DataLoader(val, batch_size=64))


def train_epoch(net, opt, loader, loss_fn):
    net.train()
    total, count = 0.0, 0
    for x, y in loader:
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        total += loss.item() * len(y)
        count += len(y)
    return total / count


def accuracy(net, loader):
    net.eval()
    right = n = 0
    with torch.no_grad():
        for x, y in loader:
            right += (net(x).argmax(1) == y).sum().item()
            n += len(y)
    return right / n


def run(epochs, start=None, stop=None, ckpt=None):
    """Train epochs [start, stop); resume from ``ckpt`` if start > 0, save at stop."""
    g = torch.Generator().manual_seed(7)
    train_loader, val_loader = loaders(g)
    net, opt, sched = build()
    loss_fn = nn.CrossEntropyLoss()
    start = start or 0
    stop = epochs if stop is None else stop
    if start:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        g.set_state(state["rng"])
        assert state["epoch"] == start
    losses = []
    for _epoch in range(start, stop):
        losses.append(train_epoch(net, opt, train_loader, loss_fn))
        sched.step()
    if ckpt is not None and stop < epochs:
        torch.save({"epoch": stop, "model": net.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "rng": g.get_state()}, ckpt)
    return net, opt, sched, losses, accuracy(net, val_loader)


def test_training_resumes_exactly_from_a_checkpoint(tmp_path):
    net_a, opt_a, sched_a, losses_a, acc_a = run(EPOCHS)
    assert losses_a[-1] < losses_a[0] and acc_a > 0.8
    assert sched_a.get_last_lr() == [0.02 * 0.5 ** 3]

    ckpt = tmp_path / "checkpoint.pt"
    *_, first_losses, _ = run(EPOCHS, stop=3, ckpt=ckpt)
    net_b, opt_b, sched_b, rest_losses, acc_b = run(EPOCHS, start=3, ckpt=ckpt)

    assert first_losses + rest_losses == losses_a
    assert acc_b == acc_a
    for (name, a), (_, b) in zip(net_a.state_dict().items(), net_b.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for i in sa["state"]:
        for k in sa["state"][i]:
            np.testing.assert_array_equal(sa["state"][i][k].numpy(), sb["state"][i][k].numpy())
    assert sched_b.get_last_lr() == sched_a.get_last_lr()
