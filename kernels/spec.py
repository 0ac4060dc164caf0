"""Kernel specifications: the data the compiler pipeline hands to a kernel generator.

A ``KernelSpec`` is a small, hashable, structural description of one fused
loop nest (see /work/notes/kernel_interface.md). Keeping it plain data lets the
kernel cache key on it and lets ``explain`` print it.

References (``Ref``) are tuples:

- ``("in", i)``: element of input array ``i`` at the current index;
- ``("v", name)``: an SSA variable computed by an earlier ``Stmt``;
- ``("c", value, dtype_name)``: a typed constant;
- ``("r", k)``: the per-row result of reduce phase ``k`` (``rows`` kernels).
  Inside phase k's ``post`` stmts it is the raw reduced value; in later phases
  (and for ``store_result``) it is the value of the last ``post`` stmt when
  there are any (e.g. mean = sum * (1/n)). Post stmt names are also visible to
  later phases as ``("v", name)``.
- ``("n", dtype_name)``: the row length of a ``rows`` kernel, as a scalar of
  that dtype (so mean/var kernels stay generic in the row length).
"""
from __future__ import annotations

from dataclasses import dataclass

Ref = tuple  # ("in", i) | ("v", name) | ("c", value, dtype_name) | ("r", k)

__all__ = ["Ref", "Stmt", "Phase", "KernelSpec", "inp", "var", "const", "red", "ExactFloat",
           "rowlen", "attrs_tuple", "REDUCE_OPS"]

REDUCE_OPS = ("sum", "max", "min", "prod")


def inp(i: int) -> Ref:
    """Reference to input array ``i``."""
    return ("in", int(i))


def var(name: str) -> Ref:
    """Reference to an SSA variable."""
    return ("v", str(name))


class ExactFloat(float):
    """A float constant that equals another only bit for bit: ``-0.0`` is not ``0.0`` and
    every NaN is NaN, so two specs that differ only in such a constant never share a
    kernel (``where(c, x, -0.0)`` once ran the ``0.0`` kernel), and a NaN constant does
    not miss the kernel cache at each lookup."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, bool) or not isinstance(other, (int, float)):
            return NotImplemented
        return float(self).hex() == float(other).hex()

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash(float(self).hex())

    def __repr__(self) -> str:
        return float.__repr__(self)

    def __reduce__(self):
        return (ExactFloat, (float(self),))


def const(value: object, dtype: str = "float32") -> Ref:
    """A typed constant (never a bare Python float in generated code)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        value = ExactFloat(value)
    return ("c", value, str(dtype))


def red(k: int) -> Ref:
    """The per-row result of reduce phase ``k``."""
    return ("r", int(k))


def rowlen(dtype: str = "float32") -> Ref:
    """The row length of a rows kernel, as a scalar of ``dtype``."""
    return ("n", str(dtype))


def attrs_tuple(attrs: dict | None) -> tuple[tuple[str, object], ...]:
    """Attributes as the sorted, hashable tuple ``Stmt.attrs`` wants (dtypes by name)."""
    if not attrs:
        return ()
    out = []
    for k in sorted(attrs):
        v = attrs[k]
        if hasattr(v, "name") and hasattr(v, "np"):  # ir.dtypes.DType
            v = v.name
        elif hasattr(v, "item"):
            v = v.item()
        out.append((k, v))
    return tuple(out)


@dataclass(frozen=True)
class Stmt:
    """One scalar op in SSA form: ``name = op(*args, **attrs)`` computed in ``dtype``."""

    name: str
    op: str
    args: tuple[Ref, ...]
    attrs: tuple[tuple[str, object], ...] = ()
    dtype: str = "float32"


@dataclass(frozen=True)
class Phase:
    """One pass over a row (or over all elements for elementwise kernels)."""

    kind: str  # "map" | "reduce"
    stmts: tuple[Stmt, ...]
    reduce_op: str | None = None  # "sum" | "max" | "min" | "prod"
    reduce_value: Ref | None = None
    stores: tuple[tuple[int, Ref], ...] = ()  # map phases: (output index, value)
    store_result: int | None = None  # reduce phases: output index receiving the row result
    post: tuple[Stmt, ...] = ()  # scalar stmts applied to the reduced value


@dataclass(frozen=True)
class KernelSpec:
    """A whole kernel: input dtypes, outputs (dtype, "full" | "row"), phases, kind."""

    inputs: tuple[str, ...]
    outputs: tuple[tuple[str, str], ...]
    phases: tuple[Phase, ...]
    kind: str  # "elementwise" | "rows"

    def validate(self) -> None:
        """Raise ValueError if the spec is structurally inconsistent."""
        if self.kind not in ("elementwise", "rows"):
            raise ValueError(f"KernelSpec: unknown kind {self.kind!r}")
        if self.kind == "elementwise":
            if len(self.phases) != 1 or self.phases[0].kind != "map":
                raise ValueError("KernelSpec: an elementwise kernel has exactly one map phase")
            for _, kind in self.outputs:
                if kind != "full":
                    raise ValueError("KernelSpec: elementwise kernels have only 'full' outputs")
        defined: set[str] = set()
        nred = 0

        def check(ref: Ref, where: str) -> None:
            tag = ref[0]
            if tag == "in":
                if not 0 <= ref[1] < len(self.inputs):
                    raise ValueError(f"KernelSpec: {where} reads input {ref[1]}, "
                                     f"but the kernel has {len(self.inputs)} inputs")
            elif tag == "v":
                if ref[1] not in defined:
                    raise ValueError(f"KernelSpec: {where} uses undefined variable {ref[1]!r}")
            elif tag == "r":
                if not 0 <= ref[1] < nred:
                    raise ValueError(f"KernelSpec: {where} uses reduce result {ref[1]} "
                                     f"before it is computed")
            elif tag == "n":
                if self.kind != "rows":
                    raise ValueError("KernelSpec: ('n', dtype) (row length) needs a rows kernel")
            elif tag != "c":
                raise ValueError(f"KernelSpec: {where}: bad reference {ref!r}")

        for p in self.phases:
            local = set(defined)
            for s in p.stmts:
                for a in s.args:
                    check(a, f"stmt {s.name}")
                defined.add(s.name)
            if p.kind == "map":
                for o, v in p.stores:
                    if not 0 <= o < len(self.outputs):
                        raise ValueError(f"KernelSpec: store to missing output {o}")
                    check(v, f"store to output {o}")
            elif p.kind == "reduce":
                if p.reduce_op not in REDUCE_OPS:
                    raise ValueError(f"KernelSpec: unknown reduce op {p.reduce_op!r}")
                if p.reduce_value is None:
                    raise ValueError("KernelSpec: a reduce phase needs reduce_value")
                check(p.reduce_value, "reduce_value")
                # per-element variables of a reduce phase are not visible later;
                # its post variables are (and ("r", k) becomes the last post value)
                defined = local
                nred += 1
                for s in p.post:
                    for a in s.args:
                        check(a, f"post stmt {s.name}")
                    defined.add(s.name)
                if p.store_result is not None and not 0 <= p.store_result < len(self.outputs):
                    raise ValueError(f"KernelSpec: store_result to missing output "
                                     f"{p.store_result}")
            else:
                raise ValueError(f"KernelSpec: unknown phase kind {p.kind!r}")


def canonical(spec: KernelSpec) -> KernelSpec:
    """The same kernel with statement names numbered in order of definition, so two
    groups that differ only in the graph's value names (six identical optimizer
    updates, say) share one compiled kernel."""
    names: dict[str, str] = {}

    def ref(r):
        if r is not None and r[0] == "v":
            return ("v", names.get(r[1], r[1]))
        return r

    def stmts(sts):
        out = []
        for st in sts:
            args = tuple(ref(a) for a in st.args)
            names[st.name] = f"t{len(names)}"
            out.append(Stmt(names[st.name], st.op, args, st.attrs, st.dtype))
        return tuple(out)

    phases = []
    for p in spec.phases:
        body = stmts(p.stmts)
        phases.append(Phase(kind=p.kind, stmts=body, reduce_op=p.reduce_op,
                            reduce_value=ref(p.reduce_value),
                            stores=tuple((o, ref(r)) for o, r in p.stores),
                            store_result=p.store_result, post=stmts(p.post)))
    return KernelSpec(inputs=spec.inputs, outputs=spec.outputs, phases=tuple(phases),
                      kind=spec.kind)
