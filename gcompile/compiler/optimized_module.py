"""``compile(module)``'s result: an ``nn.Module`` that runs the compiled plan.

Trainers treat a model as a Module: ``model = model.to(device)``, ``model.train()``,
``isinstance(model, nn.Module)``, ``model.state_dict()``. The wrapper passes all
of that to the original module (so state-dict keys stay clean, with no
``_orig_mod.`` prefix) and returns itself from the chaining methods, so the
model a trainer keeps is still the compiled one.
"""
from __future__ import annotations

from typing import Any

from ..nn.modules.module import Module

_RETURN_SELF = ("train", "eval", "to", "cpu", "cuda", "float", "double", "half", "bfloat16",
                "type", "requires_grad_", "zero_grad", "apply", "share_memory", "_apply")
_PASS = ("parameters", "named_parameters", "buffers", "named_buffers", "children",
         "named_children", "modules", "named_modules", "state_dict", "load_state_dict",
         "get_submodule", "get_parameter", "get_buffer", "register_forward_hook",
         "register_forward_pre_hook", "register_buffer", "register_parameter", "add_module",
         "register_module", "extra_repr")


class OptimizedModule(Module):
    """The compiled form of a module (torch's ``OptimizedModule``): calls run the
    compiled plan; everything else is the original module, ``_orig_mod``."""

    def __init__(self, mod: Module, compiled) -> None:
        super().__init__()
        d = self.__dict__
        d["_orig_mod"] = mod
        d["_compiled"] = compiled  # the CompiledFunction: entries, guards, graph breaks

    @property  # type: ignore[override]
    def training(self) -> bool:
        return self.__dict__["_orig_mod"].training

    @training.setter
    def training(self, mode: bool) -> None:
        self.__dict__["_orig_mod"].training = mode

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__dict__["_compiled"](*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.__dict__["_compiled"](*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        compiled = d.get("_compiled")
        if compiled is not None and name in type(compiled).__dict__ or (
                compiled is not None and name in compiled.__dict__):
            return getattr(compiled, name)
        mod = d.get("_orig_mod")
        if mod is None:
            raise AttributeError(name)
        return getattr(mod, name)

    def __repr__(self) -> str:
        inner = repr(self.__dict__["_orig_mod"]).replace("\n", "\n  ")
        return f"OptimizedModule(\n  (_orig_mod): {inner}\n)"

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(dir(self.__dict__["_orig_mod"])))


def _returns_self(name: str):
    def method(self, *args: Any, **kwargs: Any) -> OptimizedModule:
        getattr(self.__dict__["_orig_mod"], name)(*args, **kwargs)
        return self
    method.__name__ = name
    method.__doc__ = f"``{name}`` of the original module; returns the compiled wrapper."
    return method


def _passes(name: str):
    def method(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.__dict__["_orig_mod"], name)(*args, **kwargs)
    method.__name__ = name
    method.__doc__ = f"``{name}`` of the original module."
    return method


for _n in _RETURN_SELF:
    setattr(OptimizedModule, _n, _returns_self(_n))
for _n in _PASS:
    setattr(OptimizedModule, _n, _passes(_n))
