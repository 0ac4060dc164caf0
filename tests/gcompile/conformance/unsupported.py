"""The one list of what the conformance suite expects to fail, with why.

Keys: ``"Class"`` (every sample and mode), ``"Class.mode"`` or ``"Class[desc].mode"``
for modules (modes: construct, forward, backward, forward_compiled,
backward_compiled); ``"Optimizer"`` or ``"Optimizer[desc]"`` for optimizers. Listed
cases run as strict xfails, so one that starts passing fails the suite until its
line here is deleted: the list can only shrink.
"""

MODULES: dict[str, str] = {
}

OPTIMIZERS: dict[str, str] = {
    "LBFGS[Tensor lr].StepLR": "torch's LBFGS keeps the Tensor lr object itself as its step t, "
    "so a scheduler's in-place fill also rescales the stored s = d * t of the step before; "
    "gcompile reads the lr value",
    "LBFGS[Tensor lr].OneCycleLR": "as LBFGS[Tensor lr].StepLR",
}


def reason(table: dict[str, str], name: str, desc: str = "", mode: str = "") -> str | None:
    """Why ``name`` (sample ``desc``, ``mode``) is expected to fail, or None."""
    for key in (f"{name}[{desc}].{mode}", f"{name}[{desc}]", f"{name}.{mode}", name):
        if key in table:
            return table[key]
    return None
