"""gcompile: PyTorch's eager API on NumPy, with a graph compiler behind ``compile``.

``import gcompile as torch`` runs typical PyTorch programs.
"""
from __future__ import annotations

from ir.dtypes import (DType, bfloat16, bool_, can_cast, finfo, float16, float32, float64,
                       get_default_dtype, iinfo, int8, int16, int32, int64, promote_types,
                       set_default_dtype, uint8)

from . import _tensor  # noqa: F401  (the eager core: Tensor with all its methods)
import runtime.allocator  # noqa: E402
runtime.allocator.tune_host_heap()  # eager arrays from the heap, not fresh mappings
import kernels.cpu.nn_native  # noqa: E402,F401  (native conv/pool/embedding/scatter-add kernels)
import kernels.cpu.conv_native  # noqa: E402,F401  (convolution by image blocks)
import kernels.cpu.attention  # noqa: E402,F401  (attention by (batch, head) lanes)
import kernels.cpu.check_native  # noqa: E402,F401  (integer range checks: class indices)
import kernels.cpu.block_copy  # noqa: E402,F401  (bound row copies: cat, select_block_backward)
import kernels.cpu.eager_ew  # noqa: E402,F401  (generated kernels for eager activations)
import kernels.cpu.random_native  # noqa: E402,F401  (Philox kernels for the random ops)
import runtime.eager_rows  # noqa: E402,F401  (the plans' rows kernels for eager softmax, layer_norm)
from . import autograd, cuda
from . import nn  # noqa: E402
from ._creation import (channels_last, channels_last_3d, contiguous_format,  # noqa: F401
                        memory_format, preserve_format)
from ._creation import (arange, as_tensor, bernoulli, empty, empty_like, eye, from_dlpack,
                        from_numpy, full, full_like, linspace, logspace, multinomial, normal,
                        ones, ones_like, poisson, rand, rand_like, randint, randint_like, randn,
                        randn_like, randperm, tensor, zeros, zeros_like)
from ._device import device
from ._functions import *  # noqa: F401,F403
from ._functions import (abs, all, any, max, min, round, sum)  # noqa: F401,A004
from ._printing import set_printoptions
from ._random import (Generator, default_generator, get_rng_state, initial_seed, manual_seed,
                      seed, set_rng_state)
from ._tensor import Size, Tensor, strided
from . import distributions, optim, utils  # noqa: E402
from . import accelerator, amp, backends, func, linalg, special  # noqa: E402,F401
from .func import vmap  # noqa: E402,F401  (torch.vmap)
from ._aliases import *  # noqa: E402,F401,F403  (torch.det, torch.svd, torch.mvlgamma ...)
from .amp import autocast, get_autocast_dtype, is_autocast_enabled  # noqa: E402,F401
from . import distributed  # noqa: E402
from .serialization import load, save
from .autograd import (enable_grad, inference_mode, is_grad_enabled, is_inference_mode_enabled,
                       no_grad, set_grad_enabled)

__version__ = "0.1.0"

# torch's dtype aliases
bool = bool_  # noqa: A001
float = float32  # noqa: A001
double = float64
half = float16
long = int64
int = int32  # noqa: A001
short = int16
uint8 = uint8
dtype = DType
from ._creation import (BFloat16Tensor, BoolTensor, ByteTensor, CharTensor,  # noqa: E402
                        DoubleTensor, FloatTensor, HalfTensor, IntTensor, LongTensor,
                        ShortTensor)


def result_type(tensor1, tensor2):
    """torch.result_type for tensors and Python scalars."""
    from ir.dtypes import result_type as rt
    specs = [(x.dtype, x.dim()) if isinstance(x, Tensor) else x for x in (tensor1, tensor2)]
    return rt(*specs)


def is_storage(obj) -> bool:
    return False


def typename(obj) -> str:
    return obj.type() if isinstance(obj, Tensor) else type(obj).__name__


def is_nonzero(input) -> builtins_bool:  # type: ignore[name-defined]  # noqa: F821
    return input.__bool__()


builtins_bool = __builtins__["bool"] if isinstance(__builtins__, dict) else __builtins__.bool
from .compiler import compile, explain  # noqa: E402,F401,A004
from . import export  # noqa: E402  (callable: gcompile.export(fn, *inputs))
from .export import load  # noqa: E402,F811  (reads checkpoints and exported programs)
from . import onnx  # noqa: E402  (gcompile.onnx.export)
from .profile import profile  # noqa: E402


# torch.softmax / Tensor.softmax are the nn.functional ops under their torch names
def softmax(input, dim, dtype=None):  # noqa: A002
    return nn.functional.softmax(input, dim, dtype=dtype)


def log_softmax(input, dim, dtype=None):  # noqa: A002
    return nn.functional.log_softmax(input, dim, dtype=dtype)


Tensor.softmax = lambda self, dim, dtype=None: nn.functional.softmax(self, dim, dtype=dtype)
Tensor.log_softmax = lambda self, dim, dtype=None: nn.functional.log_softmax(self, dim,
                                                                             dtype=dtype)
