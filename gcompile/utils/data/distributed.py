"""torch.utils.data.distributed.DistributedSampler: each rank reads its own
1/num_replicas of the data set, in the order torch gives for the same seed."""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from .sampler import Sampler

__all__ = ["DistributedSampler"]


def torch_randperm(n: int, seed: int) -> list[int]:
    """``torch.randperm(n, generator=torch.Generator().manual_seed(seed))`` on CPU:
    torch's Fisher-Yates over its mt19937 (seeded like NumPy's legacy seeding), so
    the same seed shuffles the same way with or without torch installed."""
    if n >= (2 ** 32 - 1) // 20:
        raise ValueError(f"DistributedSampler: data sets of {n} samples are not supported")
    bits = np.random.MT19937()
    bits._legacy_seeding(seed & 0xFFFFFFFF)
    draws = bits.random_raw(max(n - 1, 0)).tolist()
    r = list(range(n))
    for i in range(n - 1):
        z = draws[i] % (n - i) + i
        r[i], r[z] = r[z], r[i]
    return r


class DistributedSampler(Sampler):
    """Sampler that restricts data loading to a subset of the dataset, per rank.

    As torch: without ``drop_last`` the indices are padded (repeating from the
    start) to a multiple of ``num_replicas``; with it, the tail is dropped. Call
    ``set_epoch`` each epoch so shuffling differs between epochs.
    """

    def __init__(self, dataset: Any, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if num_replicas is None or rank is None:
            from ... import distributed as dist
            if not dist.is_available():
                raise RuntimeError("Requires distributed package to be available")
            if num_replicas is None:
                num_replicas = dist.get_world_size()
            if rank is None:
                rank = dist.get_rank()
        if rank >= num_replicas or rank < 0:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.drop_last = drop_last
        n = len(dataset)
        if self.drop_last and n % self.num_replicas != 0:
            self.num_samples = math.ceil((n - self.num_replicas) / self.num_replicas)
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.shuffle = shuffle
        self.seed = seed

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        indices = torch_randperm(n, self.seed + self.epoch) if self.shuffle else list(range(n))
        if not self.drop_last:
            padding_size = self.total_size - len(indices)
            if padding_size <= len(indices):
                indices += indices[:padding_size]
            else:
                indices += (indices * math.ceil(padding_size / len(indices)))[:padding_size]
        else:
            indices = indices[:self.total_size]
        indices = indices[self.rank:self.total_size:self.num_replicas]
        return iter(indices)

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Shuffle differently in each epoch (the order is seeded by seed + epoch)."""
        self.epoch = epoch
