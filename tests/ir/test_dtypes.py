"""torch's promotion rules in ir.dtypes."""
import numpy as np
import pytest

from ir import dtypes as dt

ALL = dt.all_dtypes


def test_names_and_numpy_roundtrip():
    for d in ALL:
        assert repr(d) == f"torch.{d.name}"
        assert dt.from_numpy(d.np) is d
        assert dt.as_dtype(d.name) is d
        assert dt.as_dtype(d) is d
    assert dt.as_dtype(float) is dt.float32 and dt.as_dtype(int) is dt.int64
    assert dt.as_dtype(bool) is dt.bool_ and dt.as_dtype("torch.long") is dt.int64
    assert dt.float32.scalar_name == "Float" and dt.int64.scalar_name == "Long"
    with pytest.raises(TypeError):
        dt.as_dtype("complex64")
    with pytest.raises(TypeError, match="can't convert np.ndarray of type"):
        dt.from_numpy(np.complex64)


def test_promote_types_is_symmetric_and_matches_table():
    table = {
        ("uint8", "int8"): "int16", ("uint8", "int16"): "int16", ("uint8", "int64"): "int64",
        ("bool", "uint8"): "uint8", ("int8", "int32"): "int32", ("int64", "float16"): "float16",
        ("float16", "float32"): "float32", ("float32", "float64"): "float64",
        ("bool", "float32"): "float32", ("int16", "int32"): "int32",
    }
    for (a, b), want in table.items():
        da, db = dt.as_dtype(a), dt.as_dtype(b)
        assert dt.promote_types(da, db).name == want
        assert dt.promote_types(db, da).name == want
    for a in ALL:
        assert dt.promote_types(a, a) is a


def test_result_type_categories():
    f32, f64, i32, i64, u8, b = dt.float32, dt.float64, dt.int32, dt.int64, dt.uint8, dt.bool_
    assert dt.result_type((f32, 1), (f64, 0)) is f32          # dims beat 0-d
    assert dt.result_type((i32, 1), (f64, 0)) is f64          # higher category wins
    assert dt.result_type((i32, 1), 2.5) is f32               # Python float -> default
    assert dt.result_type((i64, 1), 3) is i64
    assert dt.result_type((u8, 1), 300) is u8
    assert dt.result_type((b, 1), 1) is i64
    assert dt.result_type((b, 1), True) is b
    assert dt.result_type((i32, 0), (i64, 0)) is i64
    assert dt.result_type((f32, 0), 1.0) is f32
    assert dt.result_type(1, 2.0) is f32
    assert dt.result_type((dt.float16, 1), 1.0) is dt.float16
    dt.set_default_dtype(f64)
    try:
        assert dt.result_type((i32, 1), 2.5) is f64
    finally:
        dt.set_default_dtype(f32)
    with pytest.raises(TypeError):
        dt.set_default_dtype(i32)


def test_casting_and_compute_rules_against_torch():
    """The casting and compute-type rules the eager core calls instead of restating."""
    torch = pytest.importorskip("torch")
    for a in ALL:
        for b in ALL:
            ta, tb = (getattr(torch, x.name) for x in (a, b))
            assert dt.can_cast(a, b) == torch.can_cast(ta, tb), (a, b)
    assert [dt.scalar_dtype(v) for v in (True, 3, 2.5)] == [dt.bool_, dt.int64, dt.float32]
    assert [dt.category_dtype(c) for c in range(3)] == [dt.bool_, dt.int64, dt.float32]
    assert dt.float_type(dt.int32) is dt.float32 and dt.float_type(dt.float64) is dt.float64
    assert dt.compute_type(dt.bfloat16) is dt.float32 and dt.compute_type(dt.int8) is dt.int8
    # a Python int wraps into an integer dtype as in torch (uint8 + 1000 is uint8 + 232)
    assert dt.scalar_converter(dt.uint8)(1000) == 232
    assert dt.scalar_converter(dt.float16)(0.1) == np.float16(0.1)
