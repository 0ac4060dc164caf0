"""gcompile.nn: torch.nn's modules, functional API, init and utils."""
from . import functional, init, parallel, utils
from .modules import *  # noqa: F401,F403
from .modules import Module
from .modules.module import _IncompatibleKeys
from .parameter import Buffer, Parameter, UninitializedParameter

__all__ = ["functional", "init", "parallel", "utils", "Module", "Parameter", "Buffer",
           "UninitializedParameter", "_IncompatibleKeys"]
from .modules import __all__ as _mods  # noqa: E402

__all__ += [m for m in _mods if m not in __all__]
