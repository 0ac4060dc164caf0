"""DistributedSampler: torch's exact semantics, in one process (rank/num_replicas given)."""
from __future__ import annotations

import numpy as np
import pytest

from gcompile.utils.data import DataLoader, DistributedSampler, TensorDataset
from gcompile.utils.data.distributed import torch_randperm

import gcompile as gc


def _all(n, replicas, **kw):
    ds = list(range(n))
    return [list(DistributedSampler(ds, num_replicas=replicas, rank=r, **kw))
            for r in range(replicas)]


@pytest.mark.parametrize("n,replicas", [(10, 2), (11, 2), (7, 3), (3, 4), (16, 4)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_sample_once_per_epoch_with_padding(n, replicas, shuffle):
    parts = _all(n, replicas, shuffle=shuffle, seed=3)
    per = -(-n // replicas)
    assert all(len(p) == per for p in parts)
    flat = [i for p in parts for i in p]
    assert sorted(set(flat)) == list(range(n))  # every sample at least once
    assert len(flat) - n == per * replicas - n  # the padding repeats only what is needed
    # torch's interleaving: rank r takes positions r, r + replicas, ...
    order = torch_randperm(n, 3) if shuffle else list(range(n))
    padded = (order * (per * replicas // n + 1))[:per * replicas]
    for r, p in enumerate(parts):
        assert p == padded[r::replicas]


@pytest.mark.parametrize("n,replicas", [(10, 3), (11, 2), (12, 4)])
def test_drop_last_drops_the_tail(n, replicas):
    parts = _all(n, replicas, drop_last=True)
    per = n // replicas
    assert all(len(p) == per for p in parts)
    flat = [i for p in parts for i in p]
    assert len(set(flat)) == len(flat) == per * replicas  # exactly once, no padding


def test_set_epoch_reshuffles_deterministically():
    ds = list(range(50))
    s = DistributedSampler(ds, num_replicas=2, rank=0, seed=1)
    e0 = list(s)
    assert list(s) == e0  # same epoch, same order
    s.set_epoch(1)
    e1 = list(s)
    assert e1 != e0 and list(s) == e1
    assert e1 == torch_randperm(50, 1 + 1)[0::2]
    assert len(s) == 25


def test_randperm_is_torchs():
    # torch.randperm(10, generator=torch.Generator().manual_seed(0)) in PyTorch
    assert torch_randperm(10, 0) == [4, 1, 7, 5, 3, 9, 0, 8, 6, 2]
    for n in (0, 1, 2, 100):
        assert sorted(torch_randperm(n, 5)) == list(range(n))


def test_same_order_as_torch():
    pytest.importorskip("torch")
    from torch.utils.data.distributed import DistributedSampler as TorchSampler
    for n, replicas, kw in ((101, 2, {}), (37, 3, {"drop_last": True}),
                            (64, 4, {"shuffle": False}), (20, 3, {"seed": 9})):
        for epoch in (0, 3):
            for r in range(replicas):
                a = DistributedSampler(list(range(n)), num_replicas=replicas, rank=r, **kw)
                b = TorchSampler(list(range(n)), num_replicas=replicas, rank=r, **kw)
                a.set_epoch(epoch)
                b.set_epoch(epoch)
                assert list(a) == list(b)


def test_errors_and_dataloader():
    with pytest.raises(ValueError, match="Invalid rank 2"):
        DistributedSampler(list(range(4)), num_replicas=2, rank=2)
    import gcompile.distributed as dist
    if dist.is_available():
        with pytest.raises(ValueError, match="Default process group has not been initialized"):
            DistributedSampler(list(range(4)))
    else:  # without mpi4py, as torch without its distributed package
        with pytest.raises(RuntimeError, match="Requires distributed package to be available"):
            DistributedSampler(list(range(4)))
    ds = TensorDataset(gc.arange(12).float())
    seen = []
    for r in range(2):
        loader = DataLoader(ds, batch_size=2, sampler=DistributedSampler(ds, 2, r, seed=4))
        seen += [int(v) for (xb,) in loader for v in xb.tolist()]
    assert sorted(seen) == list(range(12))
    assert np.array_equal(sorted(seen), np.arange(12))
