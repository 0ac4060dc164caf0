"""Interop without copies: tensor/as_tensor/from_dlpack with NumPy, DLPack capsules,
``__array_interface__`` objects, torch and JAX (when installed), and ``__array__``."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile as gc


def _shares(t: gc.Tensor, a: np.ndarray) -> bool:
    return np.shares_memory(t.numpy(), a)


class ArrayInterface:
    """Exposes memory only through ``__array_interface__`` (as many C extensions do)."""

    def __init__(self, a: np.ndarray) -> None:
        self._a = a
        self.__array_interface__ = a.__array_interface__


def test_as_tensor_shares_array_interface_memory():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = gc.as_tensor(ArrayInterface(a))
    assert _shares(t, a) and t.shape == (2, 3) and t.dtype == gc.float32
    a[0, 0] = 42
    assert t[0, 0].item() == 42


def test_tensor_copies_array_interface_memory():
    a = np.arange(4, dtype=np.int64)
    t = gc.tensor(ArrayInterface(a))
    assert not _shares(t, a) and t.dtype == gc.int64
    a[0] = 9
    assert t[0].item() == 0


def test_as_tensor_with_other_dtype_converts():
    a = np.arange(3, dtype=np.float64)
    t = gc.as_tensor(ArrayInterface(a), dtype=gc.float32)
    assert t.dtype == gc.float32 and t.tolist() == [0.0, 1.0, 2.0]


def test_from_dlpack_numpy_and_capsule_share_memory():
    a = np.arange(5, dtype=np.float32)
    t = gc.from_dlpack(a)
    assert _shares(t, a)
    c = gc.from_dlpack(a.__dlpack__())  # a legacy capsule
    a[1] = -1
    assert t[1].item() == -1 and c[1].item() == -1


def test_numpy_reads_a_tensor_through_dlpack_without_copy():
    t = gc.arange(6, dtype=gc.float32)
    a = np.from_dlpack(t)
    a[2] = 100
    assert t[2].item() == 100


def test_from_dlpack_rejects_non_producers():
    with pytest.raises(TypeError):
        gc.from_dlpack([1, 2, 3])


def test_array_protocol_no_copy_and_copy():
    t = gc.ones(3)
    a = np.asarray(t)
    a[0] = 5
    assert t[0].item() == 5  # shared
    b = np.array(t)  # copy=True by default
    b[1] = 7
    assert t[1].item() == 1
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError):
        np.array(t, dtype=np.float64, copy=False)
    assert isinstance(np.exp(t), np.ndarray) and np.allclose(np.exp(t), np.exp(a))


def test_torch_round_trip():
    torch = pytest.importorskip("torch")
    src = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    t = gc.as_tensor(src)
    assert t.shape == (2, 3)
    src[0, 0] = 42
    assert t[0, 0].item() == 42  # shared
    c = gc.tensor(src)
    src[0, 1] = -5
    assert c[0, 1].item() == 1  # copied
    d = gc.from_dlpack(src)
    assert d[0, 1].item() == -5
    back = torch.from_dlpack(t)
    back[1, 2] = 7
    assert t[1, 2].item() == 7
    g = gc.tensor(torch.ones(2, requires_grad=True))
    assert g.tolist() == [1.0, 1.0]


def test_jax_round_trip():
    jnp = pytest.importorskip("jax.numpy")
    import jax
    x = jnp.arange(6, dtype=jnp.float32).reshape(2, 3)
    t = gc.from_dlpack(x)
    assert t.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert gc.tensor(x).tolist() == t.tolist()
    assert gc.as_tensor(x).shape == (2, 3)
    y = jax.dlpack.from_dlpack(gc.arange(4, dtype=gc.float32))
    assert np.asarray(y).tolist() == [0, 1, 2, 3]
