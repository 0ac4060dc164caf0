"""Random state: Generator objects and the default generator (torch.manual_seed), and the
seeds random ops draw from them.

Layer: above the dispatcher (``random_tensor`` runs the registry's random ops); creation
and ``cuda`` use it."""
from __future__ import annotations

import json
import time

import numpy as np

from ._dispatch import apply_op
from ._state import state
from ._symshape import SymInt
from ._tensor_base import Tensor


class Generator:
    """A seeded random stream (PCG64). Streams are reproducible per seed; they
    are not bit-identical to PyTorch's Mersenne Twister streams."""

    def __init__(self, device="cpu") -> None:
        self.device = device
        self._seed = 67280421310721
        self._rng = np.random.Generator(np.random.PCG64(self._seed))

    def manual_seed(self, seed: int) -> Generator:
        _not_while_tracing("Generator.manual_seed")
        seed = int(seed)
        if seed < -(2 ** 63) or seed >= 2 ** 64:
            raise RuntimeError(f"Overflow when unpacking long: seed {seed} is out of range")
        self._seed = seed % (2 ** 64)
        self._rng = np.random.Generator(np.random.PCG64(self._seed))
        return self

    def seed(self) -> int:
        s = int(time.time_ns()) % (2 ** 63)
        self.manual_seed(s)
        return s

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self):
        blob = json.dumps({"seed": self._seed, "state": self._rng.bit_generator.state},
                          default=int).encode()
        return Tensor._make(np.frombuffer(blob, np.uint8).copy())

    def set_state(self, new_state) -> Generator:
        _not_while_tracing("Generator.set_state")
        data = new_state._data if hasattr(new_state, "_data") else np.asarray(new_state)
        try:
            st = json.loads(bytes(data.astype(np.uint8)).decode())
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = st["state"]
        except (ValueError, KeyError, TypeError) as e:
            raise RuntimeError(f"Generator.set_state: not a state from get_state ({e})") from None
        self._seed = st["seed"]
        self._rng = rng
        return self


default_generator = Generator()


def _not_while_tracing(what: str) -> None:
    """Reseeding inside a compiled function is a graph break: the plan re-draws its
    seeds from the generator at every call, but a ``manual_seed`` traced once would
    not run again, so later calls would draw different numbers than eager ones."""
    if state.tracer is not None:
        state.tracer.graph_break(f"{what} (changing the random state)")


def _gen(generator):
    """The NumPy stream a random op draws from. While tracing, a draw is a graph
    break: its numbers would be baked into the plan (the same "random" numbers on
    every call), whichever generator it comes from."""
    if state.tracer is not None:
        state.tracer.graph_break("random number generation" + (
            "" if generator is None else " (an explicit Generator)"))
    if generator is None:
        return default_generator._rng
    if not isinstance(generator, Generator):
        raise TypeError(f"generator must be a gcompile.Generator, got {type(generator).__name__}")
    return generator._rng


def manual_seed(seed: int) -> Generator:
    return default_generator.manual_seed(seed)


def seed() -> int:
    return default_generator.seed()


def initial_seed() -> int:
    return default_generator.initial_seed()


def get_rng_state():
    return default_generator.get_state()


def set_rng_state(new_state) -> None:
    default_generator.set_state(new_state)


def _next_seed(gen: Generator) -> int:
    """The next seed a random op takes from ``gen`` (advancing it by one draw)."""
    return int(gen._rng.integers(0, 2**63 - 1))


def draw_seed(generator=None):
    """A 0-d int64 seed for one random op, from ``generator`` (default: the global
    one). Eagerly it is drawn now; while tracing it becomes a plan input that is
    drawn again, in program order, at every call of the compiled plan."""
    gen = default_generator if generator is None else generator
    if not isinstance(gen, Generator):
        raise TypeError(f"generator must be a gcompile.Generator, got {type(gen).__name__}")
    if state.tracer is not None:
        return state.tracer.random_seed(lambda: _next_seed(gen))
    return Tensor._make(np.asarray(_next_seed(gen), np.int64))


def random_tensor(kind: str, shape: tuple, dtype, generator=None):
    """Samples of ``kind`` ("uniform": U[0, 1), "normal": N(0, 1)) through the
    registry's random ops, so compiled code draws them at run time."""
    return apply_op("rand_" + kind, (draw_seed(generator),),
                    {"shape": tuple(s if isinstance(s, SymInt) else int(s) for s in shape),
                     "dtype": dtype})

