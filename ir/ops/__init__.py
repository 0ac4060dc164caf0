"""Importing this package registers every built-in op."""
from . import checks, elementwise, indexing, linalg, movement, reduction  # noqa: F401
from . import nn  # noqa: F401,E402
from . import recurrent  # noqa: F401,E402
from . import lapack, sorting, special  # noqa: F401,E402
from . import random  # noqa: F401,E402
from . import collectives  # noqa: F401,E402
from . import composites  # noqa: F401,E402
from . import decompositions  # noqa: F401,E402
