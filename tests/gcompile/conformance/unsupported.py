"""The one list of what the conformance suite expects to fail, with why.

Keys: ``"Class"`` (every sample and mode), ``"Class.mode"``, ``"Class[desc].mode"``, or
``"Class{kwarg}"`` (samples whose constructor gets a true ``kwarg``) for modules (modes:
construct, forward, backward, forward_compiled, backward_compiled); ``"Optimizer"``,
``"Optimizer[desc]"`` or ``"Optimizer[desc].check"`` for optimizers. Listed
cases run as strict xfails, so one that starts passing fails the suite until its
line here is deleted: the list can only shrink.
"""

MODULES: dict[str, str] = {
}

OPTIMIZERS: dict[str, str] = {
}


def reason(table: dict[str, str], name: str, desc: str = "", mode: str = "",
           features: tuple[str, ...] = ()) -> str | None:
    """Why ``name`` (sample ``desc``, ``mode``, true constructor ``features``) is
    expected to fail, or None."""
    keys = [f"{name}[{desc}].{mode}", f"{name}[{desc}]", f"{name}.{mode}", name]
    keys += [f"{name}{{{f}}}" for f in features]
    for key in keys:
        if key in table:
            return table[key]
    return None
