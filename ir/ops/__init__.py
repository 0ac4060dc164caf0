"""Importing this package registers every built-in op."""
from . import checks, elementwise, indexing, linalg, movement, reduction  # noqa: F401
from . import nn  # noqa: F401,E402
