"""The one entry every eager op goes through: ``apply_op`` runs a registered op on
tensors, with torch's dtype rules (plans cached per signature), records it on the tape
(``OpNode``) and on an active tracer. CUDA operands take ``_device_op`` (device views,
``kernels.cuda`` kernels, or the host fallback), found by one flag test on the CPU path.

Layer: above the tensor's storage (``_tensor_base``) and the tape's node types
(``_tape``); everything that runs ops (the Tensor's methods, creation, random, autograd's
engine, the functions) imports it from here.
"""
from __future__ import annotations

import threading

import numpy as np

from ir import dtypes as dt
from ir.registry import REGISTRY, GradBuilder, compute_dtype, output_dtype, vjp

from ._device import LIVE as _DEVICE_LIVE
from ._device import CudaArray
from ._device import mixed_devices as _mixed_devices
from ._device import on as _on_device
from ._state import state
from ._symbolic import SymScalar
from ._tape import (_FREED_MSG, Meta, Node, SavedTensor, SymMeta, _seq_counter,
                    grad_accumulator)
from ._tensor_base import Tensor

_EMPTY: dict = {}
_SCALARS = (bool, int, float, SymScalar)
_EW_CACHE: dict = {}
_REGISTRY = REGISTRY
_state = state
_new_tensor = object.__new__

try:  # NumPy >= 2: set the ufunc error state through its context variable directly
    from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj
    _QUIET = _make_extobj(all="ignore")
    _set_errstate = _extobj_contextvar.set
    _reset_errstate = _extobj_contextvar.reset
except ImportError:  # pragma: no cover - older NumPy
    _QUIET = {"all": "ignore"}

    def _set_errstate(cfg):
        return np.seterr(**cfg)

    def _reset_errstate(tok):
        np.seterr(**tok)


def _quiet_call(fn, arrays, attrs):
    """Call ``fn`` with NumPy floating-point warnings off (torch returns inf/nan
    silently); ~10x cheaper than entering ``np.errstate``."""
    tok = _set_errstate(_QUIET)
    try:
        return fn(*arrays, **attrs)
    finally:
        _reset_errstate(tok)


_EW2_CACHE: dict = {}


def _clear_plans() -> None:
    """Dtype plans depend on the default dtype (int -> float ops, Python floats)."""
    _EW_CACHE.clear()
    _EW2_CACHE.clear()
    for op in REGISTRY.values():
        op._plans.clear()


dt.on_default_dtype_change.append(_clear_plans)


# ---------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------
def _ew_plan(op, args):
    """Per-argument casts for an elementwise op, cached per signature.

    Returns ``(compute DType or None, output DType or None, casts)`` where
    ``casts[i]`` is the NumPy dtype argument ``i`` is converted to (None: use
    as is) or, for a Python scalar, the NumPy scalar type it becomes.
    """
    key = (op,) + tuple([(a._data.dtype, a._data.ndim == 0) if isinstance(a, Tensor)
                         else a.__class__ for a in args])
    plan = _EW_CACHE.get(key)
    if plan is None:
        plan = _EW_CACHE[key] = _make_ew_plan(op, args)
    return plan


def _make_ew_plan(op, args):
    specs = [(a.dtype, a._data.ndim) if isinstance(a, Tensor) else a for a in args]
    if op.dtype_rule == "where":
        specs = specs[1:]
    if op.dtype_rule == "cast":
        return None, None, (None,) * len(args)
    cdt = compute_dtype(op, specs)
    odt = output_dtype(op, specs)
    wide = dt.compute_type(cdt)
    if wide is not cdt:
        # bfloat16 computes in float32: the plan says so and marks the call for
        # _via_float32 instead of listing casts
        return wide, odt, _VIA_FLOAT32
    casts = []
    for i, a in enumerate(args):
        if i == 0 and op.dtype_rule == "where":
            casts.append(None)
        elif isinstance(a, Tensor):
            casts.append(None if a._data.dtype == cdt.np else cdt.np)
        else:
            casts.append(dt.scalar_converter(cdt))
    return cdt, odt, tuple(casts)


_BF16 = dt.bfloat16.np
_WIDE = dt.compute_type(dt.bfloat16)  # float32: where bfloat16 arithmetic runs
_VIA_FLOAT32 = "via float32"  # the plan of an op that computes a bfloat16 result


def _via_float32(op, args, attrs, grad_name):
    """Run ``op`` where it would compute on (or produce) bfloat16: bfloat16 is a storage
    type, as on torch's CPU, so the operands are cast to float32, the op runs there and
    its result is rounded to the dtype the op's rule gives. The casts are ops of their
    own, so the tape differentiates through them (a bfloat16 input gets a bfloat16
    gradient) and a trace records float32 arithmetic between explicit casts, which
    compiled plans then run exactly as eager code does."""
    if op._ew:
        odt = _ew_plan(op, args)[1]
        skip = 0 if op.dtype_rule == "where" else -1  # where's condition stays bool
        args = tuple(apply_op("cast", (a,), {"dtype": _WIDE})
                     if isinstance(a, Tensor) and i != skip and a._data.dtype != _WIDE.np
                     else a for i, a in enumerate(args))
        if not any(isinstance(a, Tensor) for a in args):  # numbers only (default bfloat16)
            args = (Tensor._make(np.asarray(args[0], _WIDE.np)),) + args[1:]
        low = attrs
    else:
        specs = [(a.shape, a.dtype) if isinstance(a, Tensor) else a for a in args]
        odt = op.infer(specs, attrs)[1]
        args = tuple(apply_op("cast", (a,), {"dtype": _WIDE})
                     if isinstance(a, Tensor) and a._data.dtype is _BF16 else a for a in args)
        low = attrs
        if attrs.get("dtype") is dt.bfloat16:
            low = dict(attrs, dtype=_WIDE)
    out = apply_op(op, args, low, grad_name)
    if odt is dt.bfloat16:
        out = apply_op("cast", (out,), {"dtype": dt.bfloat16}, grad_name or op._grad_fn_name)
    return out


def _infer_error(op, args, attrs):
    """Re-run the shape rule to turn a NumPy error into a torch-style one."""
    specs = [(tuple(a.shape), a.dtype) if isinstance(a, Tensor) else a for a in args]
    op.infer(specs, attrs)


def _ew_arrays(args, casts):
    arrays = []
    for a, c in zip(args, casts):
        if isinstance(a, Tensor):
            arr = a._data
            arrays.append(arr if c is None else arr.astype(c))
        else:
            arrays.append(a if c is None else c(a))
    return arrays


def apply_op(name, args, attrs=_EMPTY, grad_name=None):
    """Run op ``name`` eagerly on ``args`` (Tensors, or Python numbers for
    elementwise operands), record it on the tape and on an active tracer.

    This is the hot path of eager mode: per-op facts are precomputed on the
    OpDef by ``ir.registry.register`` and dtype plans are cached per signature.
    """
    op = _REGISTRY[name] if name.__class__ is str else name
    tracer = _state.tracer
    if tracer is not None:
        args, attrs = tracer.lift(op, args, attrs)
        if tracer.record_only:
            return tracer.stand_in(op, args, attrs)
        if tracer.shape_env is not None and op.grad is None and op.decomposition is not None:
            # dynamic sizes: a gradient derived from the decomposition would be built
            # at the traced sizes; record the primitives themselves instead
            out = tracer.decomposed(op, args, attrs)
            if out is not None:
                return out
    if _DEVICE_LIVE[0]:  # a CUDA tensor exists: CUDA operands take the device path
        out = _device_op(op, args, attrs, grad_name, tracer)
        if out is not None:
            return out
    if op._ew:
        if len(args) == 2:
            x, y = args
            if isinstance(x, Tensor):
                xd = x._data
                dx = xd.dtype
                if isinstance(y, Tensor):
                    yd = y._data
                    if dx is yd.dtype:
                        # same dtypes: 0-d-ness cannot change the result type
                        casts = op._plans.get(dx)
                        if casts is None:
                            casts = op._plans[dx] = _ew_plan(op, args)[2]
                    else:
                        key = (op, dx, xd.ndim == 0, yd.dtype, yd.ndim == 0)
                        casts = _EW2_CACHE.get(key)
                        if casts is None:
                            casts = _EW2_CACHE[key] = _ew_plan(op, args)[2]
                    if casts is _VIA_FLOAT32:
                        return _via_float32(op, args, attrs, grad_name)
                    arrays = (xd if casts[0] is None else xd.astype(casts[0]),
                              yd if casts[1] is None else yd.astype(casts[1]))
                else:
                    # tensor (op) Python number: the tensor's rank cannot matter either
                    key = (dx, y.__class__)
                    casts = op._plans.get(key)
                    if casts is None:
                        casts = op._plans[key] = _ew_plan(op, args)[2]
                    if casts is _VIA_FLOAT32:
                        return _via_float32(op, args, attrs, grad_name)
                    c = casts[1]
                    arrays = (xd if casts[0] is None else xd.astype(casts[0]),
                              y if c is None else c(y))
            else:
                casts = _ew_plan(op, args)[2]
                if casts is _VIA_FLOAT32:
                    return _via_float32(op, args, attrs, grad_name)
                arrays = _ew_arrays(args, casts)
        else:
            casts = _ew_plan(op, args)[2]
            if casts is _VIA_FLOAT32:
                return _via_float32(op, args, attrs, grad_name)
            arrays = _ew_arrays(args, casts)
        tok = _set_errstate(_QUIET)
        try:
            out = op.impl(*arrays) if attrs is _EMPTY else op.impl(*arrays, **attrs)
        except (ValueError, TypeError) as e:
            _infer_error(op, args, attrs)  # a shape error, in torch's words
            raise RuntimeError(f"{op.name}: {e}") from None
        finally:
            _reset_errstate(tok)
    else:
        low = False
        for a in args:
            if isinstance(a, Tensor):
                if a._data.dtype is _BF16:
                    low = True
            elif not isinstance(a, _SCALARS):
                raise TypeError(f"{op.name}: expected Tensor arguments, got {type(a).__name__}")
        if (low or attrs.get("dtype") is dt.bfloat16) and not op._view:
            return _via_float32(op, args, attrs, grad_name)
        if op._eager_infer:
            # the arrays' own shapes (attributes hold traced values here, see lift)
            specs = [(a._data.shape, a.dtype) if isinstance(a, Tensor) else a for a in args]
            op.infer(specs, attrs)
        arrays = [a._data if isinstance(a, Tensor) else a for a in args]
        out = _quiet_call(op.impl, arrays, attrs)
    if out.__class__ is not np.ndarray:
        out = np.asarray(out)
    result = _new_tensor(Tensor)
    result._data = out
    result.grad_fn = None
    result._requires_grad = False
    result._grad = None
    result._acc = None
    result._base = None
    result._view_spec = None
    if op._view and np.may_share_memory(out, args[0]._data):
        src = args[0]
        result._vbox = src._vbox
        result._base = src._base if src._base is not None else src
        if op.name == "getitem" and src._base is None:
            result._view_spec = (attrs["index"], args[1:])
    else:
        result._vbox = [0]
    if op._diff and _state.grad_enabled and (out.dtype.kind == "f" or out.dtype is _BF16):
        for a in args:
            if isinstance(a, Tensor) and a._requires_grad:
                result.grad_fn = OpNode(op, args, attrs, result, grad_name)
                result._requires_grad = True
                break
    if tracer is not None:
        tracer.record(op, args, attrs, result)
    return result


# ---------------------------------------------------------------------------
# CUDA tensors: device checks, device kernels, views, the host fallback
# ---------------------------------------------------------------------------
class _BackwardDevice(threading.local):
    """Per thread: the device of the CUDA node whose gradient rule runs (None: none)."""

    device = None


_BACKWARD_DEVICE = _BackwardDevice()
_FALLBACK_LOGGED: set = set()


def _device_op(op, args, attrs, grad_name, tracer):
    """Run ``op`` on CUDA operands, or None when no operand is on a CUDA device (the CPU
    path runs). Device checks as torch's (a 0-d CPU tensor or a Python number may join
    CUDA operands); views stay device views; an op with a device kernel
    (``kernels.cuda.launch``) runs it, any other op runs its NumPy implementation on host
    copies and its result is copied back (logged once per op on
    ``GCOMPILE_LOG=cuda_fallback``). The tape records the op as on the CPU, so autograd
    is unchanged."""
    dev = None
    cpu = False
    for a in args:
        if isinstance(a, Tensor):
            d = a._data
            if d.__class__ is CudaArray:
                if dev is None:
                    dev = d.device
                elif d.device != dev:
                    raise _mixed_devices(dev, d.device)
            elif d.ndim:
                cpu = True
    if dev is None:
        bdev = _BACKWARD_DEVICE.device
        if bdev is None or any(isinstance(a, Tensor) for a in args):
            return None
        # a gradient rule of a CUDA op made a tensor from nothing (zeros of a shape):
        # it belongs on that op's device
        host = _host_run(op, args, attrs)
        return _device_result(op, args, attrs, grad_name, tracer,
                              CudaArray.from_host(host, bdev))
    if cpu and (op.name not in _INDEXING or any(
            isinstance(a, Tensor) and a._data.__class__ is not CudaArray and a._data.ndim
            and a._data.dtype.kind not in "iub" for a in args)):
        raise _mixed_devices(dev, "cpu")
    args = tuple(_to_device(a, dev) if isinstance(a, Tensor) and a._data.__class__ is not
                 CudaArray else a for a in args)
    with _on_device(dev):
        return _device_run(op, args, attrs, grad_name, tracer, dev)


def _device_run(op, args, attrs, grad_name, tracer, dev):
    """``_device_op``'s work on its device, with that device current."""
    if op._ew:
        plan = _ew_plan(op, args)
        if plan[2] is _VIA_FLOAT32:
            return _via_float32(op, args, attrs, grad_name)
    else:
        for a in args:
            if not isinstance(a, (Tensor,) + _SCALARS):
                raise TypeError(f"{op.name}: expected Tensor arguments, got {type(a).__name__}")
        if (any(isinstance(a, Tensor) and a._data.dtype is _BF16 for a in args)
                or attrs.get("dtype") is dt.bfloat16) and not op._view:
            return _via_float32(op, args, attrs, grad_name)
        if op._eager_infer:
            specs = [(a._data.shape, a.dtype) if isinstance(a, Tensor) else a for a in args]
            op.infer(specs, attrs)
    out = None
    if op._view:
        out = _device_view(op, args, attrs)
        if out is not None:
            return _device_result(op, args, attrs, grad_name, tracer, out, view=True)
        # the op copies (a reshape no strides can express): the same op on a contiguous
        # device copy is a view of that copy
        out = _device_view(op, (Tensor._make(args[0]._data.copy()),) + args[1:], attrs)
        if out is not None:
            return _device_result(op, args, attrs, grad_name, tracer, out)
    out = _launch(op, args, attrs, dev)
    if out is None:
        if op.name not in _FALLBACK_LOGGED:
            _FALLBACK_LOGGED.add(op.name)
            from runtime.logs import log
            log("cuda_fallback", f"{op.name}: no CUDA kernel, runs on the host (copies both "
                                 "ways)")
        out = CudaArray.from_host(_host_run(op, args, attrs), dev)
    return _device_result(op, args, attrs, grad_name, tracer, out)


# ops whose CPU index tensors may address a CUDA tensor: torch allows x_cuda[idx_cpu], and
# library functions (diagonal, ...) build their index tensors on the host
_INDEXING = frozenset(("getitem", "index_put", "index_select", "gather", "take"))


def _to_device(t, dev):
    """A 0-d CPU tensor (or a CPU index tensor) joining CUDA operands, copied to their
    device."""
    out = Tensor._make(CudaArray.from_host(t._data, dev))
    if _state.tracer is not None:  # traced as ``t`` itself, not baked as a constant
        _state.tracer.alias(out, t)
    return out


def _device_view(op, args, attrs):
    """The device view a view op makes (``CudaArray.view_by``: its NumPy implementation
    on a host array of the same layout over uninitialised memory), or None when the op
    copies (a reshape that no strides can express): the caller computes it."""
    rest = [a._data.host() if isinstance(a, Tensor) else a for a in args[1:]]

    def fn(host):
        try:
            return _quiet_call(op.impl, [host] + rest, attrs)
        except Exception:  # noqa: BLE001 - the real run raises it with real data
            return None

    return args[0]._data.view_by(fn)


def _launch(op, args, attrs, dev):
    """``op`` on the device through ``kernels.cuda.launch`` (CudaArray or None: no
    kernel for these operands, or no kernels module)."""
    launch = _device_kernels()
    if launch is None:
        return None
    specs = [(a._data.shape, a.dtype) if isinstance(a, Tensor) else a for a in args]
    shape, odt = op.infer(specs, attrs)
    fill = _FILLS.get(op.name)
    if fill is not None:  # zeros_like & co: a fill kernel, nothing read or copied
        from kernels.cuda import fill as fill_kernel
        out = CudaArray.empty(tuple(int(n) for n in shape), odt.np, dev)
        fill_kernel(out.dev, attrs.get("value") if fill == "value" else fill)
        return out
    # operands as they are: the kernels apply the op's dtype rule (compute_dtype) themselves
    inputs = [a._data.dev if isinstance(a, Tensor) else a for a in args]
    outs = launch(op.name, attrs, inputs, [tuple(int(n) for n in shape)], [odt.name])
    if outs is None:
        return None
    return CudaArray(outs[0], dev)


_KERNELS: list = []
_FILLS = {"zeros_like": 0, "ones_like": 1, "full_like": "value"}


def _device_kernels():
    """``kernels.cuda.launch``, or None while that module does not exist."""
    if not _KERNELS:
        try:
            from kernels.cuda import launch
        except ImportError:
            launch = None
        _KERNELS.append(launch)
    return _KERNELS[0]


def _host_run(op, args, attrs):
    """``op``'s CPU result (a NumPy array) on host copies of the operands."""
    creation = op.category == "creation"  # reads its operands' shapes only: no download
    hargs = tuple(Tensor._make(np.empty(a._data.shape, a._data.dtype) if creation else
                               a._data.host())
                  if isinstance(a, Tensor) and a._data.__class__ is CudaArray else a
                  for a in args)
    tracer = _state.tracer
    bdev = _BACKWARD_DEVICE.device
    _state.tracer = None
    _BACKWARD_DEVICE.device = None
    try:
        return apply_op(op, hargs, attrs)._data
    finally:
        _state.tracer = tracer
        _BACKWARD_DEVICE.device = bdev


def _device_result(op, args, attrs, grad_name, tracer, out, view=False):
    """The result tensor of a device op: view bookkeeping and the tape, as apply_op's
    CPU path (which writes the same lines inline: a call there costs ~3% of a small op)."""
    result = _new_tensor(Tensor)
    result._data = out
    result.grad_fn = None
    result._requires_grad = False
    result._grad = None
    result._acc = None
    result._base = None
    result._view_spec = None
    if view:
        src = args[0]
        result._vbox = src._vbox
        result._base = src._base if src._base is not None else src
        if op.name == "getitem" and src._base is None:
            result._view_spec = (attrs["index"], args[1:])
    else:
        result._vbox = [0]
    if op._diff and _state.grad_enabled and (out.dtype.kind == "f" or out.dtype is _BF16):
        for a in args:
            if isinstance(a, Tensor) and a._requires_grad:
                result.grad_fn = DeviceOpNode(op, args, attrs, result, grad_name)
                result._requires_grad = True
                break
    if tracer is not None:
        tracer.record(op, args, attrs, result)
    return result


def _graph_break(what: str) -> None:
    """Tell an active tracer that ``what`` reads values it cannot keep symbolic."""
    if state.tracer is not None:
        state.tracer.graph_break(what)

# ---------------------------------------------------------------------------
# the tape's node for a registered op, and the builder its gradient rule runs through
# ---------------------------------------------------------------------------
class OpNode(Node):
    """grad_fn of a registered op: applies its gradient rule through the builder.

    Built for every op recorded with grad on, so the constructor is kept lean:
    inputs the rule does not read are kept as shape/dtype only (Meta), saved
    ones behind a version check (SavedTensor).
    """

    _next_nr = None

    def __init__(self, op, inputs, attrs, out, name=None):
        self._seq_nr = next(_seq_counter)
        self.op = op
        self.attrs = attrs
        self._name = name
        nxt = []
        needs = []
        meta = []
        saves = op.saves
        saved = None
        tracer = _state.tracer
        env = tracer.shape_env if tracer is not None else None  # dynamic sizes: SymInts
        for i, x in enumerate(inputs):
            if x.__class__ in _NUMBERS or isinstance(x, _NUMBERS):
                nxt.append(None)
                needs.append(False)
                meta.append(x)
                continue
            if x._requires_grad:
                gf = x.grad_fn
                if gf is None:
                    nxt.append(x._acc if x._acc is not None else grad_accumulator(x))
                else:
                    nxt.append(gf)
                    if gf.num_outputs != 1:
                        nr = x.__dict__.get("_out_nr", 0)
                        if nr:
                            if self._next_nr is None:
                                self._next_nr = [0] * len(inputs)
                            self._next_nr[i] = nr
                needs.append(True)
            else:
                nxt.append(None)
                needs.append(False)
            if i in saves:
                if saved is None:
                    saved = {}
                saved[i] = SavedTensor(x)
                meta.append(None)
            else:
                d = x._data
                meta.append(Meta(d.shape, d.dtype) if env is None else
                            SymMeta(d.shape, tuple(x.shape), d.dtype, env))
        if -1 in saves:
            if saved is None:
                saved = {}
            saved[-1] = SavedTensor(out, is_output=True)
        self._next = tuple(nxt)
        self._needs = needs
        self._saved = saved
        self._meta = meta
        d = out._data
        self._out_meta = Meta(d.shape, d.dtype) if env is None else \
            SymMeta(d.shape, tuple(out.shape), d.dtype, env)
        self._freed = False

    @property
    def next_functions(self):
        return tuple((n, 0) for n in self._next)

    def name(self) -> str:
        return self._name or self.op._grad_fn_name

    def apply(self, grad):
        if self._freed and self.op.saves:
            raise RuntimeError(_FREED_MSG)
        saved = self._saved or {}
        inputs = [saved[i].unpack(None) if i in saved else m for i, m in enumerate(self._meta)]
        out = saved[-1].unpack(self) if -1 in saved else self._out_meta
        grads = vjp(self.op, EagerBuilder(self._needs), grad, inputs, out, self.attrs)
        return [g if need else None for g, need in zip(grads, self._needs)]

    def release(self):
        if self._saved:
            self._saved = None
        self._freed = True


class DeviceMeta(Meta):
    """Shape and dtype of an unsaved CUDA input, and its device: a gradient rule's
    ``zeros_like`` of it is made there."""

    __slots__ = ("device",)

    def __init__(self, shape, np_dtype, device):
        super().__init__(shape, np_dtype)
        self.device = device


class DeviceOpNode(OpNode):
    """grad_fn of an op on CUDA tensors: the rule runs as for a CPU op, with the op's
    device as where tensors made from nothing (zeros of a shape) go."""

    def __init__(self, op, inputs, attrs, out, name=None):
        super().__init__(op, inputs, attrs, out, name)
        dev = out._data.device
        self._device = dev
        self._meta = [DeviceMeta(m.shape, m._npd, dev) if m.__class__ is Meta else m
                      for m in self._meta]

    def apply(self, grad):
        prev = _BACKWARD_DEVICE.device
        _BACKWARD_DEVICE.device = self._device
        try:
            return super().apply(grad)
        finally:
            _BACKWARD_DEVICE.device = prev


_NUMBERS = (bool, int, float)


class EagerBuilder(GradBuilder):
    """Gradient rules run as ordinary dispatched ops, so with grad mode on
    (create_graph=True) they are themselves recorded: double backward.

    ``needs`` (one bool per op input, or None: all) tells a rule which inputs want a
    gradient, so it can skip work whose result would be dropped (a graph builder has
    none; there dead-code elimination removes it)."""

    __slots__ = ("needs",)

    def __init__(self, needs=None):
        self.needs = needs

    def op(self, name, *args, **attrs):
        if args and isinstance(args[0], Meta) and name in _LIKE:
            # a rule asked for e.g. zeros_like(x) of an input it did not save:
            # only its shape and dtype are needed
            m = args[0]
            d = attrs.get("dtype") or m.dtype
            fill = {"zeros_like": 0, "ones_like": 1}.get(name, attrs.get("value"))
            if any(not isinstance(n, int) for n in m.shape):  # traced dynamic sizes
                return apply_op("full", (), {"shape": m.shape, "value": fill, "dtype": d})
            if m.__class__ is DeviceMeta:
                return Tensor._make(CudaArray.from_host(np.full(m.shape, fill, d.np), m.device))
            return Tensor._make(np.full(m.shape, fill, d.np))
        return apply_op(name, args, attrs)

    def run_gradient_graph(self, recipe, key, inputs, g):
        """A derived gradient (``derived_vjp``) run as one compiled plan of its graph
        (``runtime.eager_gradients``) rather than op by op: the arrays of its outputs
        as tensors, or None where the replay serves (a gradient that must itself be
        differentiable, a trace recording it, inputs not kept or not host float
        arrays of the graph's dtypes, small sizes)."""
        if state.grad_enabled or state.tracer is not None or recipe.graph is None:
            return None
        arrays = []
        for k, v in zip(recipe.graph_inputs, recipe.graph.inputs):
            t = g if k == "tangent" else inputs[k]
            if not isinstance(t, Tensor):  # (a Parameter is one)
                return None
            a = t._data
            if a.__class__ is not np.ndarray or a.dtype != v.dtype.np or \
                    a.shape != v.shape:
                return None
            arrays.append(a)
        if not arrays or max(a.size for a in arrays) < _eager_gradients().MIN_SIZE:
            return None
        outs = _eager_gradients().run(recipe, key, arrays)
        return None if outs is None else [Tensor._make(o) for o in outs]


def _eager_gradients():
    from runtime import eager_gradients
    return eager_gradients


_LIKE = ("zeros_like", "ones_like", "full_like")


EAGER_BUILDER = EagerBuilder()


def check_values(input: Tensor, kind: str, *, low=None, high=None, ignore=None,
                 error: str = "RuntimeError", message: str) -> Tensor:
    """``input``, or ``error(message.format(bad=...))`` when a value fails the check
    (kind "finite" or "range"): an op, so a compiled plan checks on every call."""
    return apply_op("check", (input,), {"kind": kind, "low": low, "high": high,
                                        "ignore": ignore, "error": error, "message": message})
