"""Datasets, samplers, collation and the DataLoader, with and without workers."""
from __future__ import annotations

import math
from collections import OrderedDict, namedtuple

import numpy as np
import pytest

import gcompile as torch
from gcompile.utils.data import (BatchSampler, ConcatDataset, DataLoader, Dataset,
                                 IterableDataset, RandomSampler, SequentialSampler, Subset,
                                 SubsetRandomSampler, TensorDataset, WeightedRandomSampler,
                                 default_collate, get_worker_info, random_split)


def tds(n=10):
    return TensorDataset(torch.arange(n), torch.arange(n) * 2.0)


def as_lists(loader):
    return [[t.tolist() if isinstance(t, torch.Tensor) else t for t in b] for b in loader]


# ---- datasets -------------------------------------------------------------------------
def test_tensor_dataset_and_size_mismatch():
    d = tds(4)
    assert len(d) == 4
    x, y = d[2]
    assert x.item() == 2 and y.item() == 4.0
    with pytest.raises(ValueError, match="Size mismatch between tensors"):
        TensorDataset(torch.zeros(3), torch.zeros(4))


def test_subset_concat_and_add():
    d = tds(5)
    s = Subset(d, [4, 0])
    assert len(s) == 2 and s[0][0].item() == 4
    c = ConcatDataset([d, s])
    assert len(c) == 7 and c[5][0].item() == 4 and c[-1][0].item() == 0
    assert len(d + s) == 7
    with pytest.raises(ValueError, match="empty iterable"):
        ConcatDataset([])


def test_random_split_lengths_and_fractions():
    d = tds(10)
    a, b = random_split(d, [7, 3], generator=torch.Generator().manual_seed(1))
    assert len(a) == 7 and len(b) == 3
    assert sorted(a.indices + b.indices) == list(range(10))
    a2, _ = random_split(d, [7, 3], generator=torch.Generator().manual_seed(1))
    assert a2.indices == a.indices
    parts = random_split(d, [0.5, 0.3, 0.2], generator=torch.Generator().manual_seed(2))
    assert [len(p) for p in parts] == [5, 3, 2]
    parts = random_split(tds(11), [0.34, 0.33, 0.33])
    assert [len(p) for p in parts] == [4, 4, 3]  # floors 3,3,3 + remainder dealt round-robin
    with pytest.raises(ValueError, match="Sum of input lengths"):
        random_split(d, [5, 4])


# ---- samplers -------------------------------------------------------------------------
def test_samplers():
    d = tds(6)
    assert list(SequentialSampler(d)) == list(range(6))
    g = torch.Generator().manual_seed(3)
    perm = list(RandomSampler(d, generator=g))
    assert sorted(perm) == list(range(6))
    rs = RandomSampler(d, replacement=True, num_samples=70, generator=g)
    draws = list(rs)
    assert len(draws) == 70 == len(rs) and all(0 <= i < 6 for i in draws)
    rs = RandomSampler(d, num_samples=14, generator=g)
    draws = list(rs)
    assert len(draws) == 14 and sorted(draws[:6]) == list(range(6))
    with pytest.raises(ValueError, match="num_samples should be a positive integer"):
        RandomSampler(d, num_samples=0)
    assert sorted(SubsetRandomSampler([3, 5, 7], generator=g)) == [3, 5, 7]
    assert list(BatchSampler(range(7), 3, False)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert len(BatchSampler(range(7), 3, True)) == 2
    with pytest.raises(ValueError, match="batch_size should be a positive integer"):
        BatchSampler(range(3), 0, False)


def test_weighted_random_sampler_frequencies():
    w = [1.0, 0.0, 3.0]
    s = WeightedRandomSampler(w, 20000, generator=torch.Generator().manual_seed(0))
    counts = np.bincount(list(s), minlength=3)
    assert counts[1] == 0
    p = 0.25
    sd = math.sqrt(20000 * p * (1 - p))
    assert abs(counts[0] - 20000 * p) < 5 * sd
    no_rep = list(WeightedRandomSampler([1, 1, 1, 1], 4, replacement=False))
    assert sorted(no_rep) == [0, 1, 2, 3]


# ---- collate ---------------------------------------------------------------------------
Point = namedtuple("Point", ["x", "y"])


def test_default_collate_rules():
    b = default_collate([1.5, 2.5])
    assert b.dtype is torch.float64 and b.tolist() == [1.5, 2.5]
    assert default_collate([1, 2]).dtype is torch.int64
    assert default_collate([True, False]).dtype is torch.bool
    assert default_collate(["a", "b"]) == ["a", "b"]
    arr = default_collate([np.zeros(3, np.float32), np.ones(3, np.float32)])
    assert arr.shape == (2, 3) and arr.dtype is torch.float32
    assert default_collate([np.int32(1), np.int32(2)]).dtype is torch.int32
    d = default_collate([{"a": torch.ones(2), "b": (1, "s")}, {"a": torch.zeros(2),
                                                             "b": (2, "t")}])
    assert d["a"].shape == (2, 2) and d["b"][0].tolist() == [1, 2] and d["b"][1] == ["s", "t"]
    assert isinstance(d["b"], list)  # tuples come back as lists, like torch
    od = default_collate([OrderedDict(z=1, a=2), OrderedDict(z=3, a=4)])
    assert type(od) is OrderedDict and list(od) == ["z", "a"]
    p = default_collate([Point(1, 2.0), Point(3, 4.0)])
    assert isinstance(p, Point) and p.y.dtype is torch.float64
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([[1, 2], [1]])
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        default_collate([torch.zeros(2), torch.zeros(3)])
    with pytest.raises(TypeError, match="default_collate: batch must contain"):
        default_collate([object(), object()])


# ---- the loader ------------------------------------------------------------------------
def test_exact_batches_without_shuffle_and_drop_last():
    loader = DataLoader(tds(10), batch_size=4)
    batches = as_lists(loader)
    assert batches == [[[0, 1, 2, 3], [0.0, 2.0, 4.0, 6.0]], [[4, 5, 6, 7], [8.0, 10.0, 12.0,
                                                                              14.0]],
                       [[8, 9], [16.0, 18.0]]]
    assert len(loader) == 3
    loader = DataLoader(tds(10), batch_size=4, drop_last=True)
    assert len(loader) == 2 and len(list(loader)) == 2
    assert list(DataLoader(list(range(5)), batch_size=None)) == [0, 1, 2, 3, 4]  # no batching


def test_shuffle_with_generator_is_reproducible_and_permutes_each_epoch():
    def epochs(seed):
        g = torch.Generator().manual_seed(seed)
        loader = DataLoader(tds(12), batch_size=5, shuffle=True, generator=g)
        return [[i for b in loader for i in b[0].tolist()] for _ in range(3)]

    a, b = epochs(7), epochs(7)
    assert a == b
    for order in a:
        assert sorted(order) == list(range(12))
    assert a[0] != a[1] or a[1] != a[2]
    assert epochs(8) != a


def test_collate_fn_dict_dataset_and_custom_collate():
    class D(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return {"x": torch.full((2,), float(i)), "label": i, "name": f"n{i}"}

    b = next(iter(DataLoader(D(), batch_size=3)))
    assert b["x"].shape == (3, 2) and b["label"].tolist() == [0, 1, 2]
    assert b["name"] == ["n0", "n1", "n2"]
    out = list(DataLoader(D(), batch_size=2, collate_fn=lambda s: len(s)))
    assert out == [2, 2, 1]


def test_loader_argument_errors():
    d = tds(4)
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        DataLoader(d, sampler=SequentialSampler(d), shuffle=True)
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
        DataLoader(d, batch_sampler=BatchSampler(range(4), 2, False), batch_size=2)
    with pytest.raises(ValueError, match="num_workers option should be non-negative"):
        DataLoader(d, num_workers=-1)
    with pytest.raises(ValueError, match="persistent_workers option needs num_workers > 0"):
        DataLoader(d, persistent_workers=True)
    loader = DataLoader(d, batch_sampler=BatchSampler(range(4), 3, False), pin_memory=True)
    assert len(loader) == 2


class Stream(IterableDataset):
    """0..n-1, split across workers by get_worker_info()."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __iter__(self):
        info = get_worker_info()
        if info is None:
            return iter(range(self.n))
        return iter(range(info.id, self.n, info.num_workers))


def test_iterable_dataset_single_process():
    loader = DataLoader(Stream(7), batch_size=3)
    assert [b.tolist() for b in loader] == [[0, 1, 2], [3, 4, 5], [6]]
    assert len(loader) == 3
    assert len(list(DataLoader(Stream(7), batch_size=3, drop_last=True))) == 2
    with pytest.raises(ValueError, match="expected unspecified shuffle option"):
        DataLoader(Stream(3), shuffle=True)


class Noisy(Dataset):
    """Samples that record which process made them and draw from the worker's RNG."""

    def __len__(self):
        return 11

    def __getitem__(self, i):
        return torch.tensor([float(i)]), i * i


def _init(worker_id):
    np.random.seed(1000 + worker_id)


def test_workers_give_the_same_batches_as_the_main_process():
    def batches(workers):
        g = torch.Generator().manual_seed(5)
        kw = dict(num_workers=workers, worker_init_fn=_init,
                  multiprocessing_context="fork") if workers else {}
        loader = DataLoader(Noisy(), batch_size=3, shuffle=True, generator=g, **kw)
        return [as_lists(loader) for _ in range(2)]

    main, workers = batches(0), batches(2)
    assert main == workers
    assert sorted(x for b in main[0] for x in b[1]) == [i * i for i in range(11)]


def test_iterable_dataset_with_workers_and_worker_info():
    loader = DataLoader(Stream(10), batch_size=2, num_workers=2, multiprocessing_context="fork",
                        persistent_workers=True)
    for _ in range(2):  # second epoch reuses the persistent workers
        got = [b.tolist() for b in loader]
        # worker 0 streams evens, worker 1 odds; batches alternate between workers
        assert got == [[0, 2], [1, 3], [4, 6], [5, 7], [8], [9]]


class Boom(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 2:
            raise KeyError("bad sample 2")
        return i


def test_worker_exception_is_reraised_with_its_traceback():
    loader = DataLoader(Boom(), batch_size=1, num_workers=1, multiprocessing_context="fork")
    with pytest.raises(KeyError, match="Caught KeyError in DataLoader worker process 0"):
        list(loader)


class WhoAmI(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        import os
        info = get_worker_info()
        return {"pid": os.getpid(), "seed": info.seed, "id": info.id,
                "draw": torch.randint(0, 2 ** 30, (1,)).item()}


def test_workers_are_separate_processes_with_distinct_seeds():
    import os
    g = torch.Generator().manual_seed(0)
    out = list(DataLoader(WhoAmI(), batch_size=None, num_workers=2, generator=g,
                          multiprocessing_context="fork"))
    assert [o["id"] for o in out] == [0, 1, 0, 1]
    pids = {o["pid"] for o in out}
    assert len(pids) == 2 and os.getpid() not in pids
    assert out[1]["seed"] == out[0]["seed"] + 1
    assert out[0]["draw"] != out[1]["draw"]  # workers' default generators are seeded apart


def test_tensor_dataset_fast_batches_equal_per_sample_collation():
    x = torch.randn(23, 3, 2)
    y = torch.arange(23)
    d = TensorDataset(x, y)
    for ds in (d, Subset(d, [5, 3, 22, 0, 9, 9, 1])):
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        fast = list(DataLoader(ds, batch_size=4, shuffle=True, generator=g1))
        slow = list(DataLoader(ds, batch_size=4, shuffle=True, generator=g2,
                               collate_fn=lambda b: default_collate(b)))
        assert len(fast) == len(slow)
        for (fx, fy), (sx, sy) in zip(fast, slow):
            assert torch.equal(fx, sx) and torch.equal(fy, sy) and fy.dtype is sy.dtype


class Dies(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        import os
        import time
        if i == 1:
            os._exit(3)  # a crash that raises nothing
        if i == 2:
            time.sleep(5)
        return i


def test_dead_worker_and_timeout_raise_clear_errors(monkeypatch):
    from gcompile.utils.data import dataloader as dl
    monkeypatch.setattr(dl, "_STATUS_POLL", 0.2)
    loader = DataLoader(Dies(), batch_size=None, num_workers=1, multiprocessing_context="fork")
    with pytest.raises(RuntimeError, match=r"DataLoader worker \(pid\(s\) \d+\) exited "
                                           "unexpectedly"):
        list(loader)
    slow = DataLoader(Subset(Dies(), [2]), batch_size=None, num_workers=1, timeout=0.3,
                      multiprocessing_context="fork")
    with pytest.raises(RuntimeError, match="DataLoader timed out after 0.3 seconds"):
        list(slow)
