"""Graph passes: cleanup (dce, cse, constant folding), fusion and memory planning."""
from .cleanup import cse, dce, fold_constants, simplify  # noqa: F401
