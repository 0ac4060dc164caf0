"""Validation of ``gcompile.compile``'s ``mode``, ``options`` and extra keyword arguments.

torch.compile swallows nothing: a misspelt mode or option is an error that
lists what is valid (with torch's exception types and wording), so a setting
that would silently do nothing never goes unnoticed. ``OPTIONS`` holds only
options gcompile can honour, each mapped to the existing knob it sets.
"""
from __future__ import annotations

from typing import Any

# torch.compile's modes; on the CPU they all compile the same plan
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# option -> (accepted types, what it controls)
OPTIONS: dict[str, tuple[tuple[type, ...], str]] = {
    "kernels": ((str,), "'numba' (generated kernels) or 'reference' (NumPy evaluation of the "
                        "kernel specs) for this function's plans"),
    "max_recompiles": ((int,), "traced signatures of this function before it runs eagerly "
                               "(default RECOMPILE_LIMIT)"),
    "keep_arena": ((bool,), "keep each plan's arena pages resident between calls (True: "
                            "faster, holds the memory; False: give them back after every "
                            "call); default: keep arenas under runtime.allocator."
                            "ARENA_RELEASE_BYTES"),
}
_CHOICES = {"kernels": ("numba", "reference")}

# keyword arguments torch.compile takes beyond fullgraph/dynamic/backend/mode/options
KWARGS: dict[str, tuple[type, ...]] = {"disable": (bool,)}


def validate_compile_options(mode: str | None, options: dict[str, Any] | None,
                             kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check ``compile(..., mode=, options=, **kwargs)`` and return the options (empty
    when none). RuntimeError for an unknown mode or option, or both given (as torch);
    TypeError for an unknown keyword argument or a wrongly typed value; ValueError for a
    value outside an option's choices, or for an unknown channel in the GCOMPILE_LOG
    environment variable (checked here so the mistake shows at ``compile()``, not at
    the first log line). Every message lists the valid names."""
    import os

    from runtime.logs import parse
    parse(os.environ.get("GCOMPILE_LOG", ""))
    for k, v in kwargs.items():
        if k not in KWARGS:
            raise TypeError(f"compile() got an unexpected keyword argument {k!r}; valid "
                            f"keyword arguments: fullgraph, dynamic, backend, mode, options, "
                            f"{', '.join(KWARGS)}")
        if not isinstance(v, KWARGS[k]):
            raise TypeError(f"compile(): {k} must be {_names(KWARGS[k])}, got "
                            f"{type(v).__name__}")
    if mode is not None and options is not None:
        raise RuntimeError("Either mode or options can be specified, but both can't be "
                           "specified at the same time.")
    if mode is not None:
        if not isinstance(mode, str) or mode not in MODES:
            raise RuntimeError(f"Unrecognized mode={mode}, should be one of: "
                               f"{', '.join(MODES)}")
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"compile(): options must be a dict, got {type(options).__name__}")
    for k, v in options.items():
        if k not in OPTIONS:
            raise RuntimeError(f"Unexpected optimization option {k}, known options are "
                               f"{list(OPTIONS)}")
        types, _ = OPTIONS[k]
        if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
            raise TypeError(f"compile(): option {k!r} must be {_names(types)}, got "
                            f"{type(v).__name__} {v!r}")
        if k in _CHOICES and v not in _CHOICES[k]:
            raise ValueError(f"compile(): option {k!r} must be one of {list(_CHOICES[k])}, "
                             f"got {v!r}")
        if isinstance(v, int) and not isinstance(v, bool) and v < 1:
            raise ValueError(f"compile(): option {k!r} must be at least 1, got {v}")
    return dict(options)


def _names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


__all__ = ["MODES", "OPTIONS", "KWARGS", "validate_compile_options"]
