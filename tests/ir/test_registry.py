"""The op registry: every op is complete and consistent."""
import pytest

import ir.ops  # noqa: F401  (registers the built-in ops)
from ir.registry import CATEGORIES, REGISTRY, GradBuilder, OpDef, get_op, register


def test_every_op_is_complete():
    assert len(REGISTRY) > 60
    for name, op in REGISTRY.items():
        assert op.name == name
        assert op.category in CATEGORIES
        assert callable(op.impl) and callable(op.infer)
        if op.is_elementwise:
            assert op.expr, f"elementwise op {name} needs a scalar expression"
        assert op.grad_fn_name.endswith(("Backward0", "Backward1", "Slices", "Backwards"))
        for s in op.saves:
            assert s >= -1


def test_grad_fn_names_and_lookup():
    assert get_op("mul").grad_fn_name == "MulBackward0"
    assert get_op("floor_divide").grad_fn_name == "FloorDivideBackward0"
    assert get_op("cast").grad_fn_name == "ToCopyBackward0"
    with pytest.raises(KeyError, match="unknown op 'nope'"):
        get_op("nope")


def test_register_rejects_bad_ops():
    with pytest.raises(ValueError, match="already registered"):
        register(OpDef("add", "binary", lambda x, y: x + y, expr="({0} + {1})"))
    with pytest.raises(ValueError, match="unknown category"):
        register(OpDef("zzz_bad", "weird", lambda x: x))
    with pytest.raises(ValueError, match="needs a shape/dtype rule"):
        register(OpDef("zzz_noinfer", "other", lambda x: x))


def test_elementwise_infer_broadcasts_and_promotes():
    from ir import dtypes as dt
    add = get_op("add")
    assert add.infer([((2, 1), dt.int32), ((3,), dt.float32)], {}) == ((2, 3), dt.float32)
    assert get_op("lt").infer([((2,), dt.float32), 1.0], {}) == ((2,), dt.bool_)
    assert get_op("div").infer([((2,), dt.int64), ((2,), dt.int64)], {}) == ((2,), dt.float32)
    assert get_op("exp").infer([((2,), dt.int64)], {}) == ((2,), dt.float32)


def test_builder_exposes_ops():
    class Recorder(GradBuilder):
        def __init__(self):
            self.calls = []

        def op(self, name, *args, **attrs):
            self.calls.append(name)
            return name

    b = Recorder()
    assert b.mul(1, 2) == "mul"
    with pytest.raises(AttributeError):
        getattr(b, "not_an_op")  # noqa: B009
    assert b.calls == ["mul"]
