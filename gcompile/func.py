"""``torch.func``: composable function transforms (vmap, grad, vjp, jacobians) and
``functional_call``.

``grad`` and friends are built on the autograd tape with ``create_graph``, so they
compose (``grad(grad(f))``, ``jacfwd(jacrev(f))``) and ``vmap(grad(f))`` gives
per-sample gradients. ``vmap`` runs the function once per slice of the mapped
dimension and stacks the results: the same numbers as torch's batching rules, at the
cost of a Python loop (compile the function to make each call a plan).
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from . import _functions as T
from ._random import default_generator
from ._state import state
from ._tensor import Tensor
from .autograd import grad as _autograd_grad

__all__ = ["vmap", "grad", "grad_and_value", "vjp", "jacrev", "jacfwd", "hessian",
           "functional_call"]

_depth = [0]  # transforms running now: results keep their graph inside an outer one


# ---- pytrees -----------------------------------------------------------------------------
def _leaves(tree: Any, out: list) -> Any:
    if isinstance(tree, Tensor):
        out.append(tree)
        return ("T",)
    if isinstance(tree, (tuple, list)):
        spec = tuple(_leaves(t, out) for t in tree)
        return ("L" if isinstance(tree, list) else "U", spec)
    if isinstance(tree, dict):
        return ("D", tuple((k, _leaves(v, out)) for k, v in tree.items()))
    return ("C", tree)


def _build(spec: Any, it) -> Any:
    tag = spec[0]
    if tag == "T":
        return next(it)
    if tag in ("U", "L"):
        items = [_build(s, it) for s in spec[1]]
        return items if tag == "L" else tuple(items)
    if tag == "D":
        return {k: _build(s, it) for k, s in spec[1]}
    return spec[1]


def _expand_dims(dims: Any, tree: Any, what: str) -> list:
    """``dims`` (an int/None, or a structure matching ``tree``) as one entry per leaf."""
    if dims is None or isinstance(dims, int):
        n: list = []
        _leaves(tree, n)
        return [dims] * len(n)
    if isinstance(tree, (tuple, list)) and isinstance(dims, (tuple, list)):
        if len(dims) != len(tree):
            raise ValueError(f"vmap: {what} has {len(dims)} entries for {len(tree)} "
                             "arguments")
        return [d for sub_d, sub_t in zip(dims, tree) for d in _expand_dims(sub_d, sub_t, what)]
    if isinstance(tree, dict) and isinstance(dims, dict):
        return [d for k in tree for d in _expand_dims(dims.get(k), tree[k], what)]
    raise ValueError(f"vmap: {what} {dims!r} does not match the structure of the inputs")


# ---- vmap --------------------------------------------------------------------------------
def vmap(func: Callable, in_dims: Any = 0, out_dims: Any = 0, randomness: str = "error", *,
         chunk_size: int | None = None) -> Callable:
    """Map ``func`` over dimension ``in_dims`` of its inputs (None: not mapped), stacking
    results along ``out_dims``. ``randomness``: "error" (random draws raise, torch's
    default), "different" (each slice draws its own numbers) or "same" (every slice draws
    the same ones)."""
    if randomness not in ("error", "different", "same"):
        raise RuntimeError(f"Only allowed values for randomness are 'error', 'different', or "
                           f"'same'. Got {randomness}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError("vmap: chunk_size should be None or greater than 0.")

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        leaves: list = []
        spec = _leaves(tuple(args), leaves)
        dims = _expand_dims(in_dims, tuple(args), "in_dims")
        sizes = {t.shape[d % t.dim()] for t, d in zip(leaves, dims) if d is not None}
        if not sizes:
            raise ValueError("vmap: at least one input must be mapped over (in_dims all None)")
        if len(sizes) > 1:
            raise ValueError(f"vmap: Expected all tensors to have the same size in the mapped "
                             f"dimension, got sizes {sorted(sizes)} for the mapped dimension")
        n = sizes.pop()
        rng = default_generator.get_state() if randomness != "different" else None
        results = []
        for i in range(n):
            if randomness == "same":
                default_generator.set_state(rng)
            sliced = iter([t.select(d % t.dim(), i) if d is not None else t
                           for t, d in zip(leaves, dims)])
            results.append(func(*_build(spec, sliced), **kwargs))
            if randomness == "error" and not T.equal(default_generator.get_state(), rng):
                default_generator.set_state(rng)
                raise RuntimeError("vmap: called random operation while in randomness error "
                                   "mode. Please either use the 'same' or 'different' "
                                   "randomness flags on vmap or perform the randomness "
                                   "operation out of vmap")
        outs: list = []
        out_spec = _leaves(results[0], outs)
        per = [[] for _ in outs]
        for r in results:
            got: list = []
            _leaves(r, got)
            for k, t in enumerate(got):
                per[k].append(t)
        odims = _expand_dims(out_dims, results[0], "out_dims")
        stacked = [T.stack(ts, dim=d % (ts[0].dim() + 1)) for ts, d in zip(per, odims)]
        return _build(out_spec, iter(stacked))
    return wrapper


# ---- gradients ---------------------------------------------------------------------------
def _argnums(argnums, n: int) -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for a in nums:
        if not -n <= a < n:
            raise RuntimeError(f"Got argnums={argnums} but only {n} positional inputs")
    return tuple(a % n for a in nums)


def _with_inputs(args: tuple, nums: tuple[int, ...]) -> tuple[list, list]:
    """The arguments with each differentiated tensor made a graph leaf (or kept, when an
    outer transform already tracks it)."""
    args = list(args)
    diff = []
    for a in nums:
        group: list = []
        _leaves(args[a], group)
        fresh = [t if t.requires_grad else t.detach().requires_grad_(True) for t in group]
        args[a] = _build(_leaves(args[a], []), iter(fresh))
        diff.append((a, fresh))
    return args, diff


@contextlib.contextmanager
def _inside():
    """Grad mode on and one transform deeper (results keep their graph for outer ones)."""
    prev = state.grad_enabled
    state.grad_enabled = True
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
        state.grad_enabled = prev


def _call(func, args, kwargs, nums, has_aux):
    """``func`` on the arguments with the differentiated ones as graph leaves: (output,
    aux, the leaves per argument)."""
    new_args, diff = _with_inputs(args, nums)
    out = func(*new_args, **kwargs)
    aux = None
    if has_aux:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise RuntimeError("output of function f should be a tuple: (output, aux) if "
                               "has_aux is True")
        out, aux = out
    return out, aux, diff


def _finish(t: Any) -> Any:
    if _depth[0] or not isinstance(t, Tensor):
        return t
    return t.detach()


def grad_and_value(func: Callable, argnums: int | tuple = 0, has_aux: bool = False
                   ) -> Callable:
    """``func``'s gradient with respect to argument(s) ``argnums`` and its value; ``func``
    returns one scalar tensor (and an auxiliary value when ``has_aux``)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        nums = _argnums(argnums, len(args))
        with _inside():
            out, aux, diff = _call(func, args, kwargs, nums, has_aux)
            if not isinstance(out, Tensor) or out.numel() != 1:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise RuntimeError("grad_and_value(f)(*args): Expected f(*args) to return a "
                                   f"scalar Tensor, got {got}")
            flat = [t for _, group in diff for t in group]
            grads = _autograd_grad(out, flat, create_graph=True, allow_unused=True)
            grads = [T.zeros_like(t) if g is None else g for t, g in zip(flat, grads)]
        it = iter(_finish(g) for g in grads)
        per_arg = [_build(_leaves(args[a], []), it) for a in nums]
        g_out = per_arg[0] if isinstance(argnums, int) else tuple(per_arg)
        value = _finish(out)
        if has_aux:
            return g_out, (value, aux)
        return g_out, value
    return wrapper


def grad(func: Callable, argnums: int | tuple = 0, has_aux: bool = False) -> Callable:
    """The gradient of scalar-valued ``func`` with respect to argument(s) ``argnums``."""
    gv = grad_and_value(func, argnums, has_aux)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        g, value = gv(*args, **kwargs)
        return (g, value[1]) if has_aux else g
    return wrapper


def vjp(func: Callable, *primals: Any, has_aux: bool = False) -> tuple:
    """``func(*primals)`` and a function mapping cotangents to the vector-Jacobian
    products with respect to every primal."""
    with _inside():
        out, aux, diff = _call(func, primals, {}, tuple(range(len(primals))), has_aux)
    outs: list = []
    _leaves(out, outs)
    flat = [t for _, group in diff for t in group]

    def vjp_fn(*cotangents):
        cots: list = []
        _leaves(cotangents[0] if len(cotangents) == 1 else cotangents, cots)
        if len(cots) != len(outs):
            raise RuntimeError(f"Expected {len(outs)} cotangents, got {len(cots)}")
        with _inside():
            grads = _autograd_grad(outs, flat, cots, retain_graph=True, create_graph=True,
                                   allow_unused=True)
        grads = [_finish(T.zeros_like(t) if g is None else g) for t, g in zip(flat, grads)]
        it = iter(grads)
        return tuple(_build(_leaves(p, []), it) for p in primals)
    result = (_build(_leaves(out, []), iter(_finish(t) for t in outs)), vjp_fn)
    return result + (aux,) if has_aux else result


def jacrev(func: Callable, argnums: int | tuple = 0, *, has_aux: bool = False) -> Callable:
    """The Jacobian of ``func`` (tensor in, tensor out) with respect to argument(s)
    ``argnums``: output shape + input shape, one reverse pass per output element."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        nums = _argnums(argnums, len(args))
        with _inside():
            out, aux, diff = _call(func, args, kwargs, nums, has_aux)
            ins = [t for _, group in diff for t in group]
            flat_out = out.reshape(-1)
            rows = []
            for k in range(flat_out.shape[0]):
                gs = _autograd_grad(flat_out[k], ins, retain_graph=True, create_graph=True,
                                    allow_unused=True)
                rows.append([T.zeros_like(t) if g is None else g for t, g in zip(ins, gs)])
            jac = []
            for j, t in enumerate(ins):
                col = (T.stack([r[j] for r in rows]) if rows
                       else T.zeros((0,) + tuple(t.shape), dtype=t.dtype))
                jac.append(col.reshape(tuple(out.shape) + tuple(t.shape)))
        jac = [_finish(j) for j in jac]
        result = jac[0] if isinstance(argnums, int) else tuple(jac)
        return (result, aux) if has_aux else result
    return wrapper


def jacfwd(func: Callable, argnums: int | tuple = 0, has_aux: bool = False,
           *, randomness: str = "error") -> Callable:
    """The Jacobian of ``func`` (the same numbers as ``jacrev``: gcompile's autograd is
    reverse mode, so this is computed by reverse passes too)."""
    return jacrev(func, argnums, has_aux=has_aux)


def hessian(func: Callable, argnums: int | tuple = 0) -> Callable:
    """Second derivatives of scalar-valued ``func``: the Jacobian of its gradient."""
    return jacfwd(jacrev(func, argnums), argnums)


# ---- modules as functions ---------------------------------------------------------------
def functional_call(module, parameter_and_buffer_dicts, args: Any = None,
                    kwargs: dict | None = None, *, tie_weights: bool = True,
                    strict: bool = False) -> Any:
    """Call ``module`` with the given tensors in place of its parameters and buffers
    (by name), restoring its own afterwards."""
    dicts = (parameter_and_buffer_dicts if isinstance(parameter_and_buffer_dicts, (tuple, list))
             else [parameter_and_buffer_dicts])
    values: dict = {}
    for d in dicts:
        for k, v in d.items():
            if k in values:
                raise ValueError(f"functional_call got multiple values for keys ['{k}']")
            values[k] = v
    own = dict(module.named_parameters(remove_duplicate=False))
    own.update(dict(module.named_buffers(remove_duplicate=False)))
    unknown = sorted(set(values) - set(own))
    if unknown:
        raise RuntimeError(f"Unexpected key(s): {', '.join(repr(k) for k in unknown)}.")
    if strict:
        missing = sorted(set(own) - set(values))
        if missing:
            raise RuntimeError(f"Missing key(s): {', '.join(repr(k) for k in missing)}.")
    saved = []
    try:
        for name, value in values.items():
            *path, leaf = name.split(".")
            owner = module
            for p in path:
                owner = getattr(owner, p)
            store = "_parameters" if leaf in owner._parameters else "_buffers"
            saved.append((owner, store, leaf, getattr(owner, store)[leaf]))
            getattr(owner, store)[leaf] = value
        args = () if args is None else args if isinstance(args, tuple) else (args,)
        return module(*args, **(kwargs or {}))
    finally:
        for owner, store, leaf, old in reversed(saved):
            getattr(owner, store)[leaf] = old
