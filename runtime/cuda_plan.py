"""Compiled plans on a CUDA device: the CPU plan's fused graph, run by device kernels.

``compile_cuda(graph)`` lowers ``graph`` as for the CPU (``compile_graph``:
decompose, fuse, one ``KernelSpec`` per fusion group, the memory plan; ops the CPU keeps
whole for its native kernels, attention, are decomposed into ops with device kernels), with
``kernels.cuda.compile_kernel`` as the kernel factory, and turns each step into its
device counterpart (``CudaExecutor``):

- kernel steps run the group's ``CudaKernel``: an elementwise group over its shape
  (inputs broadcast by zero strides), a rows group over its shape and reduced dims;
- matmul steps run ``kernels.cuda.gemm`` (cuBLAS through CuPy when present, else the
  tiled kernel) on the operands as they are laid out (a transposed weight is a view);
- view steps (reshape, permute, expand, getitem, ...) compute the view's shape, strides
  and offset once per input layout by applying the op to a host stand-in with the same
  layout (its pages are never touched unless the op copies), then view the device array
  the same way; a view NumPy would have to copy, and every library step (an op without
  a device kernel), runs **explicitly through host memory**: operands are copied to the
  host, the op's NumPy implementation runs, the result is copied back. Each such step
  is listed in ``CudaExecutor.host_steps`` and logged on the ``kernels`` channel, so a
  plan is never silently slow and never computes different numbers;
- the memory plan's arena is one device allocation made on the first call and kept (on
  the device current then; a call on another device moves it there);
  planned intermediates are typed views into it, graph outputs are fresh device
  arrays (``kernels.cuda.empty``), constants are uploaded once.
"""
from __future__ import annotations

import threading

import numpy as np

from ir.graph import Graph, Value
from ir.interpreter import eval_op
from ir.registry import REGISTRY

from .logs import log
from .lower import Compiled, compile_graph

__all__ = ["compile_cuda", "CudaExecutor"]


def compile_cuda(graph: Graph, *, check: bool = True) -> CudaExecutor:
    """Lower ``graph`` (optimised in place) to a plan run by CUDA kernels."""
    from kernels.cuda import compile_kernel
    compiled = compile_graph(graph, check=check, make_kernel=compile_kernel, keep_whole=False)
    return CudaExecutor(compiled)


def _cuda():
    from kernels.cuda.views import cuda_module
    return cuda_module()


def _to_host(a) -> np.ndarray:
    return a.copy_to_host()


def _to_device(a: np.ndarray):
    from kernels.cuda import copy_into, empty
    a = np.asarray(a)
    out = empty(a.shape, a.dtype)
    if a.size:
        tmp = _cuda().to_device(np.ascontiguousarray(a))
        copy_into(out, tmp)
    return out


class CudaExecutor:
    """Runs a compiled plan on device arrays; calls take turns (one arena)."""

    def __init__(self, compiled: Compiled) -> None:
        self.compiled = compiled
        self.plan = plan = compiled.plan
        self._lock = threading.Lock()
        self.arena = None
        self._views: list = []
        self._consts: list = []
        self._device = None  # the ordinal the arena and constants live on
        self.host_steps: list[str] = []
        groups = {id(g.nodes[0]): g for g in compiled.fusion.groups if g.nodes}
        self._runs = []
        for st in plan.steps:
            run = self._make_run(st, groups.get(id(st.nodes[0])) if st.nodes else None)
            self._runs.append(run)
        self._fresh = [(b.slot, b.shape, b.dtype) for b in plan.buffers if not b.planned]

    # ---- steps -------------------------------------------------------------------------
    def _make_run(self, st, g):
        if st.kind == "kernel":
            return self._kernel_run(st, g)
        if st.kind == "matmul":
            return self._matmul_run(st)
        if st.kind == "view":
            return self._view_run(st)
        return self._host_run(st, why="no device kernel")

    def _kernel_run(self, st, g):
        low = st.run.low
        kernel = st.kernel
        ins, outs = list(st.inputs), list(st.outputs)
        shape = tuple(low.full_shape)
        if st.spec.kind == "elementwise":
            def device(env):
                kernel.elementwise([env[s] for s in ins], [env[s] for s in outs], shape)
        else:
            if g is None or tuple(g.shape) != shape:
                raise NotImplementedError(f"kernels.cuda: rows step {st.name} without its "
                                          "fusion group")
            dims = tuple(g.dims)

            def device(env):
                kernel.rows([env[s] for s in ins], [env[s] for s in outs], shape, dims)
        host: list = []

        def run(env):
            if not host:
                try:
                    device(env)
                    return
                except NotImplementedError as e:  # the kernel did not build for the device
                    self._note(st, f"its CUDA kernel failed: {e}")
                    host.append(True)
            self._spec_on_host(st, env)
        return run

    def _spec_on_host(self, st, env) -> None:
        """A kernel step's spec evaluated by NumPy on host copies of its operands (the
        CPU plan's operand views), the results copied back to the device."""
        from kernels.cuda import copy_into

        from .reference import ReferenceKernel
        low = st.run.low
        ins = [_to_host(env[s]) for s in st.inputs]
        ins = [a if tf is None else tf(a) for a, tf in zip(ins, low.in_tf)]
        hosts = [np.empty(tuple(env[s].shape), env[s].dtype) for s in st.outputs]
        outs = [a if tf is None else tf(a) for a, tf in zip(hosts, low.out_tf)]
        ReferenceKernel(st.spec)(ins, outs)
        for s, h in zip(st.outputs, hosts):
            copy_into(env[s], _to_device(h))

    def _matmul_run(self, st):
        from kernels.cuda.ops import _matmul
        sa, sb = st.inputs
        (so,) = st.outputs
        n = st.nodes[0]
        if n.out.dtype.name not in ("float32", "float64") or \
                any(v.dtype is not n.out.dtype for v in n.value_inputs):
            return self._host_run(st, why=f"no device GEMM for {n.out.dtype.name}")

        def run(env):
            _matmul(env[sa], env[sb], env[so])
        return run

    def _view_run(self, st):
        from kernels.cuda.views import elem_strides, strided, view_layout
        n = st.nodes[0]
        opdef = REGISTRY[n.op]
        arrays = [i for i, a in enumerate(n.inputs) if isinstance(a, Value)]
        if len(arrays) != 1:
            return self._host_run(st, why="a view of several arrays")
        k = arrays[0]
        consts = list(n.inputs)
        (si,) = st.inputs
        (so,) = st.outputs
        attrs = n.attrs
        memo: dict = {}
        host = self._host_run(st, why="a view NumPy would copy", record=False)
        noted: list = []

        def layout(x):
            key = (tuple(x.shape), elem_strides(x), str(x.dtype))
            if key not in memo:
                memo[key] = view_layout(opdef, attrs, consts, k, x)
            return memo[key]

        def run(env):
            x = env[si]
            lay = layout(x)
            if lay is None:
                if not noted:
                    noted.append(True)
                    self._note(st, "a view NumPy would copy")
                host(env)
                return
            shape, strides, off = lay
            env[so] = strided(x, shape, strides, off)
        return run

    def _note(self, st, why: str) -> None:
        self.host_steps.append(f"{st.name}: {why}")
        log("kernels", f"cuda plan: {st.name} runs through host memory ({why})")

    def _host_run(self, st, why: str, record: bool = True):
        """The step through host memory: device operands copied to the host, the op's
        NumPy implementation, the result copied back."""
        n = st.nodes[0] if st.nodes else None
        if n is None or len(st.outputs) != 1:
            raise NotImplementedError(f"kernels.cuda: step {st.name} ({st.kind}) has no "
                                      "device version")
        opdef = REGISTRY[n.op]
        (so,) = st.outputs
        slots = [(st.inputs[[i for i, b in enumerate(n.inputs)
                             if isinstance(b, Value)].index(j)] if isinstance(a, Value)
                  else None, a) for j, a in enumerate(n.inputs)]
        into = st.into
        # an op ``kernels.cuda.launch`` serves (a creation op, softmax, ...) runs there;
        # learnt on the first call, as it depends on the operands' layouts
        served: list = [] if record else [False]

        def run(env):
            from kernels.cuda import copy_into, launch
            if not served or served[0]:
                args = [env[s] if s is not None else c for s, c in slots]
                try:
                    outs = launch(n.op, dict(n.attrs), args, [n.out.shape],
                                  [n.out.dtype.name])
                except (TypeError, ValueError, KeyError):
                    outs = None
                if not served:
                    served.append(outs is not None)
                    if outs is None:
                        self._note(st, why)
                if outs is not None:
                    if into and env[so] is not None:
                        copy_into(env[so], outs[0])
                    else:
                        env[so] = outs[0]
                    return
            args = [_to_host(env[s]) if s is not None else c for s, c in slots]
            with np.errstate(all="ignore"):
                res = np.asarray(eval_op(opdef, args, n.attrs))
            dev = _to_device(res.astype(n.out.dtype.np, copy=False))
            if into and env[so] is not None:
                copy_into(env[so], dev)
            else:
                env[so] = dev
        return run

    # ---- calls -------------------------------------------------------------------------
    def _materialize(self) -> None:
        from kernels.cuda import empty
        from kernels.cuda.views import typed_view
        from kernels.cuda.memory import current_index
        plan = self.plan
        self._device = current_index()
        self.arena = empty((max(plan.arena_bytes, 1),), np.uint8)
        self._views = [(b.slot, typed_view(self.arena, b.offset, b.shape, b.dtype))
                       for b in plan.buffers if b.planned]
        self._consts = [(s, _to_device(c)) for s, c in plan.const_slots]

    def __call__(self, inputs: list, out_into: dict | None = None) -> list:
        """Run the plan on device arrays ``inputs``; returns device arrays. ``out_into``
        maps output index -> a device array to compute that output into."""
        from kernels.cuda import copy_into, empty
        from kernels.cuda.views import is_device_array
        plan = self.plan
        if len(inputs) != len(plan.input_slots):
            raise TypeError(f"compiled plan takes {len(plan.input_slots)} inputs, "
                            f"got {len(inputs)}")
        for i, a in enumerate(inputs):
            if not is_device_array(a):
                raise TypeError(f"Expected all tensors to be on the same device, but input "
                                f"{i} is on the host (a CUDA plan takes device arrays)")
        from kernels.cuda.memory import current_index
        with self._lock:
            if self.arena is None or self._device != current_index():
                self._materialize()  # first call, or called on another device
            env: list = [None] * plan.n_slots
            for s, a in zip(plan.input_slots, inputs):
                env[s] = a
            for s, a in self._consts:
                env[s] = a
            for s, a in self._views:
                env[s] = a
            into = {plan.output_slots[k]: a for k, a in (out_into or {}).items()}
            for s, shape, dtype in self._fresh:
                env[s] = into[s] if s in into else empty(shape, dtype)
            for run in self._runs:
                run(env)
            outs = []
            for s, copy in zip(plan.output_slots, plan.copy_outputs):
                a = env[s]
                if copy:
                    fresh = empty(tuple(a.shape), a.dtype)
                    copy_into(fresh, a)
                    a = fresh
                outs.append(a)
            return outs

    def release(self) -> None:
        """Give back the device arena; the next call allocates it again."""
        with self._lock:
            self.arena = None
            self._views = []
