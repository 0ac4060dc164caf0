"""Shape arithmetic: broadcasting, dims, view strides."""
import numpy as np
import pytest

from ir import shapes as S


def test_broadcast_shapes():
    assert S.broadcast_shapes((2, 1), (1, 3)) == (2, 3)
    assert S.broadcast_shapes((3,), (2, 1, 3), ()) == (2, 1, 3)
    assert S.broadcast_shapes((0, 1), (1, 4)) == (0, 4)
    with pytest.raises(RuntimeError, match=r"mul: shapes \(2, 3\) and \(4,\) are not broadcast"):
        S.broadcast_shapes((2, 3), (4,), op="mul")


def test_normalize_dims():
    assert S.normalize_dim(-1, 3) == 2
    assert S.normalize_dim(0, 0) == 0
    assert S.normalize_dims(None, 3) == (0, 1, 2)
    assert S.normalize_dims((-1, 0), 3) == (0, 2)
    with pytest.raises(IndexError, match="Dimension out of range"):
        S.normalize_dim(3, 3)
    with pytest.raises(RuntimeError, match="appears multiple times"):
        S.normalize_dims((1, -2), 3)


def test_contiguous_and_infer():
    assert S.contiguous_strides((2, 3, 4)) == (12, 4, 1)
    assert S.contiguous_strides((2, 0, 4)) == (4, 4, 1)
    assert S.contiguous_strides(()) == ()
    assert S.infer_size((-1, 4), 12) == (3, 4)
    with pytest.raises(RuntimeError, match="invalid for input of size 12"):
        S.infer_size((5, -1), 12)
    assert S.is_contiguous((2, 1, 3), (3, 99, 1))
    assert not S.is_contiguous((2, 3), (1, 2))
    assert S.numel((2, 3, 4)) == 24


def test_view_strides_matches_numpy_when_viewable():
    base = np.arange(24).reshape(2, 3, 4)
    t = base.transpose(1, 0, 2)  # (3, 2, 4) strides (4, 12, 1)
    el = base.itemsize
    st = tuple(s // el for s in t.strides)
    assert S.view_strides(t.shape, st, (3, 8)) is None
    assert S.view_strides(t.shape, st, (3, 2, 2, 2)) == (4, 12, 2, 1)
    assert S.view_strides((3, 4), (4, 1), (12,)) == (1,)
    assert S.view_strides((4, 3), (1, 4), (12,)) is None
    assert S.view_strides((2, 2), (4, 1), (4,)) is None
    assert S.view_strides((2, 1, 3), (3, 1, 1), (6,)) == (1,)
