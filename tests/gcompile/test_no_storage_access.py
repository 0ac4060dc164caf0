"""Code above the op core computes through ops only (DESIGN.md: a trace sees
everything). A read or write of tensor storage in nn, optim, utils or
distributions is invisible to the tracer: under compile its value is baked
into the plan. This scans those packages and fails on any such access that is
not in the allowlist below, where each entry says why it is safe."""
from __future__ import annotations

import ast
from pathlib import Path

import gcompile

ROOT = Path(gcompile.__file__).parent
PACKAGES = ("nn", "optim", "utils", "distributions")
STORAGE = {"_data", "_vbox"}  # the NumPy array behind a Tensor, its version counter

# (file relative to gcompile/, enclosing function) -> why it never runs inside a trace
ALLOWED = {
    ("nn/parameter.py", "__new__"): "wraps a tensor's storage as a Parameter at construction",
    ("nn/parameter.py", "__reduce_ex__"): "copy/pickle protocol, not a computation",
    ("nn/modules/module.py", "__setattr__"): "registering a Buffer shares its storage",
    ("nn/modules/module.py", "_apply"): "Module.to()/float()/...: converts parameters in "
                                        "place, outside any step",
    ("nn/init.py", "_fill"): "initialisers run at model construction under no_grad",
    ("nn/modules/sparse.py", "reset_parameters"): "zeroes the padding row at construction",
    ("distributions/utils.py", "lgamma_const"): "no lgamma op yet: it marks a graph break "
                                               "before reading values",
}


def _violations():
    found = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            tree = ast.parse(path.read_text(), rel)
            stack: list[str] = []

            def visit(node, stack=stack, rel=rel):
                is_fn = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                if is_fn:
                    stack.append(node.name)
                if isinstance(node, ast.Attribute) and node.attr in STORAGE:
                    fn = stack[-1] if stack else "<module>"
                    found.append((rel, fn, node.lineno))
                for child in ast.iter_child_nodes(node):
                    visit(child)
                if is_fn:
                    stack.pop()
            visit(tree)
    return found


def test_no_storage_access_above_the_op_core():
    bad = [f"gcompile/{rel}:{line} in {fn}()" for rel, fn, line in _violations()
           if (rel, fn) not in ALLOWED]
    assert not bad, ("tensor storage touched above the op core (use ops, or add an ALLOWED "
                     "entry saying why it never runs in a trace):\n  " + "\n  ".join(bad))


def test_allowlist_entries_are_still_needed():
    used = {(rel, fn) for rel, fn, _ in _violations()}
    stale = sorted(set(ALLOWED) - used)
    assert not stale, f"ALLOWED entries with no storage access left: {stale}"
