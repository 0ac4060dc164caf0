"""Importing this package registers every built-in op."""
from . import checks, elementwise, indexing, linalg, movement, reduction  # noqa: F401
from . import nn  # noqa: F401,E402
from . import recurrent  # noqa: F401,E402
from . import attention  # noqa: F401,E402
from . import lapack, sorting, special  # noqa: F401,E402
from . import random  # noqa: F401,E402
from . import collectives  # noqa: F401,E402
from . import composites  # noqa: F401,E402
from . import creation  # noqa: F401,E402
from . import numeric  # noqa: F401,E402
from . import decompositions  # noqa: F401,E402
from ..registry import REGISTRY as _REGISTRY  # noqa: E402

# the ops every process has: one registered later (at run time, by user code) is unknown to
# a process that did not run that code (gcompile.export writes its decomposition instead)
BUILTIN = frozenset(_REGISTRY)
