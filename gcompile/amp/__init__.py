"""torch.amp: autocast and GradScaler.

Inside ``autocast(device_type="cpu")`` (bfloat16, torch's CPU default, or float16) matrix
products (matmul, mm, bmm, linear, conv, conv_transpose, scaled_dot_product_attention) take
their float32/float16/bfloat16 operands in the autocast dtype and return it, as torch's CPU
autocast lists them. The ops torch's CPU autocast runs in float32 (the losses, 3-d pools,
grid_sample, prod, quantile, cdist, trace) take lower-precision operands in float32;
everything else keeps its dtype.
``autocast(device_type="cuda")`` (float16 by default, as torch's) does the same for ops over
CUDA tensors; each device type has its own state, as in torch. The autocast state is read
when a function runs eagerly or is traced, and is part of a compiled function's signature:
a plan serves only calls made under the autocast state it was traced with.
"""
from __future__ import annotations

import functools
import warnings
from typing import Any

from ir import dtypes as dt

from .._autocast import _LOWER, _current, _set, active_for, cast_inputs  # noqa: F401
# (cast_inputs is read by nn.functional)

__all__ = ["autocast", "GradScaler", "is_autocast_available", "custom_fwd", "custom_bwd",
           "get_autocast_dtype", "is_autocast_enabled"]


_DEFAULT = {"cpu": dt.bfloat16, "cuda": dt.float16}  # torch's defaults per device type


def is_autocast_available(device_type: str) -> bool:
    if device_type == "cuda":
        from .. import cuda
        return cuda.is_available()
    return device_type == "cpu"


def get_autocast_dtype(device_type: str = "cpu"):
    """The dtype autocast uses on ``device_type`` (torch.get_autocast_dtype)."""
    d = _current(device_type)
    return d if d is not None else _DEFAULT.get(device_type, dt.bfloat16)


def is_autocast_enabled(device_type: str = "cpu") -> bool:
    """Whether autocast is on for ``device_type`` in this thread."""
    return _current(device_type) is not None


class autocast:  # noqa: N801 - torch's name
    """Context manager (and decorator) running matrix products in lower precision."""

    def __init__(self, device_type: str = "cpu", dtype=None, enabled: bool = True,
                 cache_enabled: bool | None = None) -> None:
        if not isinstance(device_type, str):
            raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
        self.device = device_type
        self.fast_dtype = dtype
        self._enabled = bool(enabled)
        if device_type == "cuda":
            from .. import cuda
            if enabled and not cuda.is_available():
                warnings.warn("User provided device_type of 'cuda', but CUDA is not available. "
                              "Disabling")
                self._enabled = False
        elif device_type != "cpu":
            raise RuntimeError(f"User specified an unsupported autocast device_type "
                               f"'{device_type}'")
        if self._enabled:
            d = dt.as_dtype(dtype) if dtype is not None else _DEFAULT[device_type]
            if d not in _LOWER:
                where = "CPU" if device_type == "cpu" else "CUDA"
                warnings.warn(f"In {where} autocast, but the target dtype is not supported. "
                              f"Disabling autocast.\n{where} Autocast only supports dtypes of "
                              "torch.bfloat16, torch.float16 currently.")
                self._enabled = False
            self.fast_dtype = d

    def __enter__(self):
        self._prev = _current(self.device)
        _set(self.device, self.fast_dtype if self._enabled else None)
        return self

    def __exit__(self, *exc) -> None:
        _set(self.device, self._prev)

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with autocast(self.device, self.fast_dtype, self._enabled):
                return fn(*args, **kwargs)
        return wrapper


def _to_float32(x):
    from .._tensor import Tensor
    if isinstance(x, Tensor) and x.dtype in _LOWER:
        return x.float()
    return x


def _float32_op(fn):
    """``fn`` taking bfloat16/float16 tensor operands in float32 while autocast is on
    (torch's CPU autocast float32 list): losses and reductions that lose too much in
    lower precision."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        if active_for(tuple(args) + tuple(kwargs.values())) is not None:
            args = tuple(_to_float32(a) for a in args)
            kwargs = {k: _to_float32(v) for k, v in kwargs.items()}
        return fn(*args, **kwargs)
    run._autocast_float32 = True
    return run


_FLOAT32_FUNCTIONAL = (
    "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "nll_loss", "cross_entropy",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div", "soft_margin_loss",
    "margin_ranking_loss", "hinge_embedding_loss", "cosine_embedding_loss",
    "triplet_margin_loss", "multi_margin_loss", "multilabel_margin_loss", "poisson_nll_loss",
    "ctc_loss", "grid_sample", "avg_pool3d", "max_pool3d", "adaptive_avg_pool3d",
    "max_unpool2d", "max_unpool3d")
_FLOAT32_TORCH = ("prod", "quantile", "nanquantile", "cdist", "trace")


def _install_float32_list() -> None:
    """Wrap the functions (and Tensor methods) on torch's CPU autocast float32 list."""
    import sys

    from .._tensor import Tensor
    from ..nn import functional
    top = sys.modules[__name__.rsplit(".", 1)[0]]
    from .. import _functions
    for owner, names in ((functional, _FLOAT32_FUNCTIONAL), (_functions, _FLOAT32_TORCH),
                         (top, _FLOAT32_TORCH), (Tensor, _FLOAT32_TORCH)):
        for name in names:
            fn = owner.__dict__.get(name)
            if fn is not None and not getattr(fn, "_autocast_float32", False):
                setattr(owner, name, _float32_op(fn))


_install_float32_list()


def custom_fwd(fwd=None, *, device_type: str = "cpu", cast_inputs=None):  # noqa: F811
    """Decorator for a custom autograd forward (runs it as is: no extra casting)."""
    if fwd is None:
        return lambda f: f
    return fwd


def custom_bwd(bwd=None, *, device_type: str = "cpu"):
    if bwd is None:
        return lambda f: f
    return bwd


class GradScaler:
    """Scales the loss so small float16 gradients do not flush to zero; unscales before the
    optimizer step and skips steps whose gradients hold inf/NaN (torch's algorithm). On the
    CPU with bfloat16 it is accepted and works the same (bfloat16 rarely needs it)."""

    def __init__(self, device: str = "cpu", init_scale: float = 2.0 ** 16,
                 growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True) -> None:
        self._device = device
        self._enabled = enabled
        if device == "cuda" and enabled:
            from .. import cuda
            if not cuda.is_available():
                warnings.warn("torch.cuda.amp.GradScaler is enabled, but CUDA is not available. "
                              "Disabling.")
                self._enabled = False
        if growth_factor <= 1.0:
            raise ValueError("The growth factor must be > 1.0.")
        if backoff_factor >= 1.0:
            raise ValueError("The backoff factor must be < 1.0.")
        self._scale = float(init_scale)
        self._growth_factor = growth_factor
        self._backoff_factor = backoff_factor
        self._growth_interval = growth_interval
        self._growth_tracker = 0
        self._per_optimizer: dict = {}

    def is_enabled(self) -> bool:
        return self._enabled

    def scale(self, outputs: Any) -> Any:
        """outputs times the scale (tensors, or nested lists/tuples of them)."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        return outputs * self._scale

    def _state(self, optimizer) -> dict:
        return self._per_optimizer.setdefault(id(optimizer), {"stage": "ready",
                                                              "found_inf": False})

    def unscale_(self, optimizer) -> None:
        """Divide the optimizer's gradients by the scale (once per step)."""
        if not self._enabled:
            return
        st = self._state(optimizer)
        if st["stage"] == "unscaled":
            raise RuntimeError("unscale_() has already been called on this optimizer since the "
                               "last update().")
        if st["stage"] == "stepped":
            raise RuntimeError("unscale_() is being called after step().")
        from ..autograd import no_grad
        inv = 1.0 / self._scale
        found = False
        with no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    p.grad.mul_(inv)
                    if not bool(p.grad.isfinite().all()):
                        found = True
        st["found_inf"] = found
        st["stage"] = "unscaled"

    def step(self, optimizer, *args, **kwargs):
        """optimizer.step() unless the unscaled gradients hold inf/NaN."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        st = self._state(optimizer)
        if st["stage"] == "stepped":
            raise RuntimeError("step() has already been called since the last update().")
        if st["stage"] == "ready":
            self.unscale_(optimizer)
        result = None
        if not st["found_inf"]:
            result = optimizer.step(*args, **kwargs)
        st["stage"] = "stepped"
        return result

    def update(self, new_scale: float | None = None) -> None:
        """Back off after a skipped step, grow after growth_interval clean ones."""
        if not self._enabled:
            return
        if new_scale is not None:
            self._scale = float(new_scale.item() if hasattr(new_scale, "item") else new_scale)
        else:
            found = any(st["found_inf"] for st in self._per_optimizer.values())
            if found:
                self._scale *= self._backoff_factor
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
                if self._growth_tracker == self._growth_interval:
                    self._scale *= self._growth_factor
                    self._growth_tracker = 0
        self._per_optimizer = {}

    def get_scale(self) -> float:
        return self._scale if self._enabled else 1.0

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def state_dict(self) -> dict:
        if not self._enabled:
            return {}
        return {"scale": self._scale, "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval,
                "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict: dict) -> None:
        if not self._enabled:
            return
        if not state_dict:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        self._scale = float(state_dict["scale"])
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._growth_tracker = int(state_dict["_growth_tracker"])


class _DeviceAmp:
    """``torch.cuda.amp`` / ``torch.cpu.amp``: torch's older spellings of autocast and
    GradScaler with the device type fixed."""

    def __init__(self, device_type: str) -> None:
        self._device = device_type

    def autocast(self, enabled: bool = True, dtype=None, cache_enabled: bool = True):
        return autocast(self._device, dtype=dtype, enabled=enabled,
                        cache_enabled=cache_enabled)

    def GradScaler(self, *args, **kwargs):  # noqa: N802 - torch's name
        return GradScaler(self._device, *args, **kwargs)


def _install_device_amp() -> None:
    from .. import cuda
    cuda.amp = _DeviceAmp("cuda")


_install_device_amp()
