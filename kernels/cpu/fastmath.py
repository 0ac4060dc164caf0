"""Inlined float32 transcendental functions that LLVM can vectorise.

Numba lowers ``math.exp``/``math.tanh`` on float32 to scalar libm calls (no
SVML here), which turns a fused GELU loop from memory-bound into call-bound
(172 ms vs 8.4 ms on 16M floats measured on this machine). These functions are
written in plain float32 arithmetic and selects (no branches), with exponent
manipulation done by tiny LLVM intrinsics (bit casts), so a loop calling them
vectorises. Polynomial coefficients were fitted (Chebyshev least squares) on
the reduced ranges noted below; ``tests/kernels/test_fastmath.py`` sweeps the
whole float32 range (normal, subnormal, huge, inf, nan, -0.0) against NumPy.

float64 kernels use libm (``math.*``) instead: exact, scalar.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir as llir
from numba import njit, types
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, make_view, populate_array

__all__ = ["exp_f32", "expm1_f32", "log_f32", "log1p_f32", "log2_f32", "log10_f32",
           "tanh_f32", "sigmoid_f32", "erf_f32", "gelu_grad_f32", "sigmoid_f64", "FUNCTIONS_F32",
           "index_div", "index_rem", "floordiv_int", "remainder_int", "window", "strided_window",
           "ptr_window", "float_key", "key_float", "vsum"]

f32 = np.float32

# ---- bit-level helpers (LLVM intrinsics) ----------------------------------------


@intrinsic
def _f32_from_intval(typingctx, v):
    """float32 whose IEEE bits are the integer value of the float32 ``v``."""
    if v != types.float32:
        return None

    def codegen(context, builder, sig, args):
        i = builder.fptosi(args[0], llir.IntType(32))
        return builder.bitcast(i, llir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def _f32_exponent(typingctx, v):
    """The biased exponent field of a float32, as a float32."""
    if v != types.float32:
        return None

    def codegen(context, builder, sig, args):
        i = builder.bitcast(args[0], llir.IntType(32))
        e = builder.and_(builder.lshr(i, llir.Constant(llir.IntType(32), 23)),
                         llir.Constant(llir.IntType(32), 0xFF))
        return builder.sitofp(e, llir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def _f32_mantissa(typingctx, v):
    """A float32 with the mantissa of ``v`` and exponent 0 (a value in [1, 2))."""
    if v != types.float32:
        return None

    def codegen(context, builder, sig, args):
        i = builder.bitcast(args[0], llir.IntType(32))
        m = builder.or_(builder.and_(i, llir.Constant(llir.IntType(32), 0x007FFFFF)),
                        llir.Constant(llir.IntType(32), 0x3F800000))
        return builder.bitcast(m, llir.FloatType())

    return types.float32(types.float32), codegen


# Order keys: LLVM does not vectorise a float max/min reduction written as a compare and
# select (NaN and signed-zero rules), but does an integer one. ``float_key`` maps a
# float's bits to an integer that orders as the float does (negative values get their
# magnitude bits flipped): NaNs land above the key of +inf (positive sign bit) or below
# the key of -inf (negative sign bit, what x86 makes of 0 * inf), so a max/min over keys
# plus a check of both ends finds a NaN too. ``key_float`` is the inverse. A row max of
# 1024 float32: 0.34 us against 1.57 us for the compare-and-select loop.
def _key_codegen(bits: int, to_float):
    def codegen(context, builder, sig, args):
        it = llir.IntType(bits)
        i = args[0] if to_float else builder.bitcast(args[0], it)
        m = builder.and_(builder.ashr(i, llir.Constant(it, bits - 1)),
                         llir.Constant(it, (1 << (bits - 1)) - 1))
        k = builder.xor(i, m)
        return builder.bitcast(k, to_float) if to_float else k
    return codegen


@intrinsic
def float_key(typingctx, v):
    """The order key (int32/int64) of a float32/float64."""
    if v == types.float32:
        return types.int32(v), _key_codegen(32, None)
    if v == types.float64:
        return types.int64(v), _key_codegen(64, None)
    return None


@intrinsic
def key_float(typingctx, k, like):
    """The float (of ``like``'s type) whose order key is ``k``."""
    if like == types.float32 and k == types.int32:
        return like(k, like), _key_codegen(32, llir.FloatType())
    if like == types.float64 and k == types.int64:
        return like(k, like), _key_codegen(64, llir.DoubleType())
    return None


# A row sum in vector lanes. Without reassociation (not allowed kernel-wide: it would
# undo exp's Cody-Waite split) LLVM keeps a float sum one serial chain, and the unrolled
# scalar accumulators the generator used still ran ~1.2 cycles per element. This loop
# adds 16 (float32) or 8 (float64) lanes with vector adds, then the lanes pairwise and
# the tail in order: a fixed order, so a row's sum does not depend on threads. Summing
# 8192 rows of 1024 float32: 1.2 ms (memory-bound) against ~3.3 ms.
def _vsum_codegen(context, builder, sig, args):
    fty = sig.args[0].dtype
    ptr = context.make_array(sig.args[0])(context, builder, args[0]).data
    lt = context.get_value_type(fty)
    lanes = 16 if fty == types.float32 else 8
    vt = llir.VectorType(lt, lanes)
    i64, i32 = llir.IntType(64), llir.IntType(32)
    n = context.cast(builder, args[1], sig.args[1], types.int64)
    nvec = builder.mul(builder.sdiv(n, i64(lanes)), i64(lanes))
    fn = builder.function
    head, body, fold, tail, step, done = (fn.append_basic_block(f"vsum_{b}") for b in (
        "head", "body", "fold", "tail", "step", "done"))
    pre = builder.block
    builder.branch(head)
    builder.position_at_end(head)
    i, acc = builder.phi(i64), builder.phi(vt)
    i.add_incoming(i64(0), pre)
    acc.add_incoming(llir.Constant(vt, None), pre)
    builder.cbranch(builder.icmp_signed("<", i, nvec), body, fold)
    builder.position_at_end(body)
    v = builder.load(builder.bitcast(builder.gep(ptr, [i]), vt.as_pointer()),
                     align=fty.bitwidth // 8)
    i.add_incoming(builder.add(i, i64(lanes)), body)
    acc.add_incoming(builder.fadd(acc, v), body)
    builder.branch(head)
    builder.position_at_end(fold)
    s, w = acc, lanes
    while w > 1:
        w //= 2
        halves = [builder.shuffle_vector(s, s, llir.Constant(llir.VectorType(i32, w),
                                                             [o + q for q in range(w)]))
                  for o in (0, w)]
        s = builder.fadd(*halves)
    s0 = builder.extract_element(s, i32(0))
    builder.branch(tail)
    builder.position_at_end(tail)
    j, t = builder.phi(i64), builder.phi(lt)
    j.add_incoming(nvec, fold)
    t.add_incoming(s0, fold)
    builder.cbranch(builder.icmp_signed("<", j, n), step, done)
    builder.position_at_end(step)
    j.add_incoming(builder.add(j, i64(1)), step)
    t.add_incoming(builder.fadd(t, builder.load(builder.gep(ptr, [j]))), step)
    builder.branch(tail)
    builder.position_at_end(done)
    return t


@intrinsic
def vsum(typingctx, arr, n):
    """``sum(arr[:n])`` of a C-contiguous 1-D float32/float64 array, in vector lanes."""
    if isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C" and \
            arr.dtype in (types.float32, types.float64) and isinstance(n, types.Integer):
        return arr.dtype(arr, n), _vsum_codegen
    return None


# ---- constants ---------------------------------------------------------------
_ONE = f32(1.0)
_TWO = f32(2.0)
_HALF = f32(0.5)
_ZERO = f32(0.0)
_INF = f32(np.inf)
_NINF = f32(-np.inf)
_NAN = f32(np.nan)
_LOG2E = f32(1.4426950408889634)
_LN2_HI = f32(0.693359375)  # exact in 8 bits
_LN2_LO = f32(-2.12194440e-4)
_LN2 = f32(0.6931471805599453)
_INV_LN10 = f32(0.4342944819032518)
_INV_LN2 = f32(1.4426950408889634)
_EXP_HI = f32(88.8)
_EXP_LO = f32(-104.0)
_BIAS = f32(127.0)
_MBITS = f32(8388608.0)  # 2**23
_SQRT2 = f32(1.4142135623730951)
_MIN_NORMAL = f32(1.1754943508222875e-38)

# e^r = 1 + r + r^2 * P(r), r in [-ln2/2, ln2/2]
_E0 = f32(0.5000000013462219)
_E1 = f32(0.1666657700316029)
_E2 = f32(0.04166646497611185)
_E3 = f32(0.008363175565466353)
_E4 = f32(0.001393364352362098)
# expm1(x) = x + x^2 * P(x), |x| < 0.5
_M0 = f32(0.49999999999155276)
_M1 = f32(0.1666666713968577)
_M2 = f32(0.04166666774746453)
_M3 = f32(0.008333182040870373)
_M4 = f32(0.0013888672828888133)
_M5 = f32(0.00019962186055217477)
_M6 = f32(2.493974205447255e-05)
# log(1+f) = 2s + s^3 Q(s^2), s = f / (2 + f), |s| <= 0.1716
_L0 = f32(0.6666666655373876)
_L1 = f32(0.400001222896873)
_L2 = f32(0.2855078026906025)
_L3 = f32(0.23331383753272344)
# tanh(x) = x P(x^2) / Q(x^2) on [-9, 9] (Sanathanan-Koerner fit, relative error 2e-8)
_TP0, _TP1, _TP2, _TP3, _TP4, _TP5, _TP6 = (f32(c) for c in (
    0.9999999979674398, 0.13090958289283666, 0.003111709350291379, 1.12352789316564e-05,
    -2.0553482390286366e-08, 5.4361096406052086e-11, -8.895553664303237e-14))
_TQ1, _TQ2, _TQ3 = (f32(c) for c in (
    0.4642428750818974, 0.024526073954046986, 0.00025574265237886896))
_TANH_CLAMP = f32(9.0)
# erf(x) = x P(x^2) / Q(x^2), |x| < 3.92 (beyond, erf rounds to +-1 in float32): a 6/5
# rational fitted by Sanathanan-Koerner iteration for relative error on [0, 4] (5e-9 in
# float64; 3.0e-7 evaluated in float32, against 1.7e-7 for the two-branch form it
# replaced, which ran 2.3x slower: an exp and a degree-11 polynomial beside the small
# branch's, every element computing both)
_EP0, _EP1, _EP2, _EP3, _EP4, _EP5, _EP6 = (f32(c) for c in (
    1.1283791691737197, 0.18520943987883751, 0.054300179110771292, 0.0038476706577822133,
    0.00037884927320103846, 4.6637560492945035e-06, -1.3091067190177423e-08))
_EQ1, _EQ2, _EQ3, _EQ4, _EQ5 = (f32(c) for c in (
    0.49747100038004116, 0.11394545294437852, 0.01545543766618694, 0.0013061707953675866,
    6.2913929902481323e-05))
_ERF_SAT = f32(3.92)

def _subroutine(ftype):
    """The helper below as an intrinsic on ``ftype``: its Python body is compiled once
    per process (and per fast-math flag set) as a Numba subroutine with NumPy's error
    model (every kernel's) and the fast-math flags of the kernel calling it, and each
    call site is one call, which LLVM inlines (the body's operations and flags are those
    Numba-level inlining gave, so the kernel computes the same bits). ``inline="always"``
    copied and re-typed the body's IR at every call site instead: ~15% of compiling a
    GPT training step."""
    def wrap(py):
        def codegen(context, builder, sig, args):
            from numba.core import compiler
            fm = context.fastmath
            key = (py.__name__, sig, frozenset(fm.flags) if fm else frozenset(),
                   type(context.error_model))
            cres = _SUBROUTINES.get(key)
            if cres is None:
                flags = compiler.Flags()
                flags.error_model = "numpy"
                if fm:
                    flags.fastmath = fm
                # links its library into the caller's, as compile_subroutine does
                cres = _SUBROUTINES[key] = context._compile_subroutine_no_cache(
                    builder, py, sig, flags=flags)
                # inlined into every caller: only there does its error status (never
                # set) fold away, and with it the caller's raise path
                cres.library._final_module.get_function(
                    cres.fndesc.llvm_func_name).add_function_attribute("alwaysinline")
            else:
                context.active_code_library.add_linking_library(cres.library)
            return context.call_internal(builder, cres.fndesc, sig, args)

        @intrinsic
        def helper(typingctx, x):
            if x == ftype:
                return ftype(ftype), codegen
            return None
        helper.__doc__ = py.__doc__
        helper.py_func = py
        return helper
    return wrap


_SUBROUTINES: dict = {}
_jit = _subroutine(types.float32)


@_jit
def exp_f32(x):
    """exp for float32: Cody-Waite reduction, degree-6 polynomial, 2^n by bit cast.
    Below ``_EXP_LO`` (the result rounds to 0) the polynomial runs on 0 and 0 is
    selected: computed there, the last product underflows, and each such element cost
    a microcode assist (a causal attention mask's -inf half made softmax 3x slower)."""
    isnan = x != x
    under = x < _EXP_LO
    xc = _ZERO if isnan | under else x
    xc = _EXP_HI if xc > _EXP_HI else xc
    n = np.floor(xc * _LOG2E + _HALF)
    r = xc - n * _LN2_HI
    r = r - n * _LN2_LO
    p = _ONE + r + r * r * (_E0 + r * (_E1 + r * (_E2 + r * (_E3 + r * _E4))))
    n1 = np.floor(n * _HALF)
    n2 = n - n1
    s1 = _f32_from_intval((n1 + _BIAS) * _MBITS)
    s2 = _f32_from_intval((n2 + _BIAS) * _MBITS)
    res = p * s1 * s2
    res = _ZERO if under else res
    return x if isnan else res


@_jit
def expm1_f32(x):
    """expm1 for float32: polynomial for |x| < 0.5, exp(x) - 1 elsewhere."""
    small = x + x * x * (_M0 + x * (_M1 + x * (_M2 + x * (_M3 + x * (_M4 + x * (
        _M5 + x * _M6))))))
    large = exp_f32(x) - _ONE
    return small if abs(x) < _HALF else large


@_jit
def log_f32(x):
    """Natural log for float32: exponent by bit cast, atanh series on the mantissa."""
    sub = x < _MIN_NORMAL
    xs = x * _MBITS if sub else x
    e = _f32_exponent(xs) - _BIAS
    e = e - f32(23.0) if sub else e
    m = _f32_mantissa(xs)
    big = m > _SQRT2
    m = m * _HALF if big else m
    e = e + _ONE if big else e
    f = m - _ONE
    s = f / (_TWO + f)
    z = s * s
    lm = _TWO * s + s * z * (_L0 + z * (_L1 + z * (_L2 + z * _L3)))
    r = e * _LN2_HI + (lm + e * _LN2_LO)
    r = x if not (x < _INF) else r
    r = _NAN if x < _ZERO else r
    return _NINF if x == _ZERO else r


@_jit
def log1p_f32(x):
    """log1p for float32: log(1 + x) plus a first-order correction for the rounding of 1 + x."""
    u = _ONE + x
    r = log_f32(u) + (x - (u - _ONE)) / u
    r = x if u == _ONE else r
    r = x if x == _INF else r
    return _NINF if u == _ZERO else r


@_jit
def log2_f32(x):
    """log2 for float32."""
    return log_f32(x) * _INV_LN2


@_jit
def log10_f32(x):
    """log10 for float32."""
    return log_f32(x) * _INV_LN10


@_jit
def tanh_f32(x):
    """tanh for float32: a fitted 13/6 rational x P(x^2) / Q(x^2) on [-9, 9] (3 ulp)."""
    xc = _TANH_CLAMP if x > _TANH_CLAMP else x
    xc = -_TANH_CLAMP if xc < -_TANH_CLAMP else xc
    z = xc * xc
    p = _TP0 + z * (_TP1 + z * (_TP2 + z * (_TP3 + z * (_TP4 + z * (_TP5 + z * _TP6)))))
    q = _ONE + z * (_TQ1 + z * (_TQ2 + z * _TQ3))
    return xc * p / q


@_jit
def sigmoid_f32(x):
    """Logistic sigmoid for float32; exp(-|x|) never overflows, so subnormal results
    for x < -87 come out right (1 / (1 + exp(-x)) would give 0)."""
    e = exp_f32(-abs(x))
    r = _ONE / (_ONE + e)
    return r if x >= _ZERO else e * r


@_jit
def erf_f32(x):
    """erf for float32: ``x P(x^2) / Q(x^2)`` below ``_ERF_SAT``, +-1 beyond (one
    branch-free form: a branch would stop LLVM vectorising)."""
    ax = abs(x)
    xc = _ERF_SAT if ax > _ERF_SAT else ax
    z = xc * xc
    p = _EP0 + z * (_EP1 + z * (_EP2 + z * (_EP3 + z * (_EP4 + z * (_EP5 + z * _EP6)))))
    q = _ONE + z * (_EQ1 + z * (_EQ2 + z * (_EQ3 + z * (_EQ4 + z * _EQ5))))
    r = x * p / q  # x's own sign: erf(-0.0) is -0.0
    sat = _ONE if x > _ZERO else -_ONE
    return sat if ax >= _ERF_SAT else r


_SQRT1_2 = f32(0.7071067811865476)
_INV_SQRT_2PI = f32(0.3989422804014327)


@_jit
def gelu_grad_f32(x):
    """GELU's derivative Phi(x) + x phi(x) for float32 (``gelu_backward`` is g times
    it): ``erf_f32`` at u = x/sqrt2 and the density's exp(-u^2)."""
    u = x * _SQRT1_2
    return _HALF * (_ONE + erf_f32(u)) + x * exp_f32(-(u * u)) * _INV_SQRT_2PI


@njit(inline="always", error_model="numpy")  # generic: integer kernels call it too
def sigmoid_f64(x):
    """Logistic sigmoid for float64 (libm exp)."""
    return 1.0 / (1.0 + np.exp(-x))


# op-template function name -> float32 implementation
from .codegen import FUNCTIONS_F32  # noqa: E402 - the names codegen emits calls to


def divmod_functions(ftype):
    """NumPy's float floor division and remainder for ``ftype`` (its ``npy_divmod``, so
    1 // 0.1 == 9 exactly as eager, where floor(a / b) gives 10), as plain Python for a
    target to compile: CPU kernels here, device functions in ``kernels.cuda.devmath``."""
    zero, one, half = ftype(0.0), ftype(1.0), ftype(0.5)

    def floordiv(a, b):
        if b == zero:
            return ftype(a / b)
        mod = np.fmod(a, b)
        div = (a - mod) / b
        if mod != zero and ((b < zero) != (mod < zero)):
            div = div - one
        fl = np.floor(div)
        if div - fl > half:
            fl = fl + one
        if div == zero:
            fl = np.copysign(zero, a / b)
        return ftype(fl)

    def remainder(a, b):
        mod = np.fmod(a, b)
        if mod != zero and ((b < zero) != (mod < zero)):
            mod = mod + b
        if mod == zero:
            mod = np.copysign(zero, b)
        return ftype(mod)

    return floordiv, remainder


def _make_divmod(ftype):
    jit = njit(inline="always", error_model="numpy")
    return tuple(jit(f) for f in divmod_functions(ftype))


floordiv_f32, remainder_f32 = _make_divmod(np.float32)
floordiv_f64, remainder_f64 = _make_divmod(np.float64)


# ---- integer division without a raise path -----------------------------------------
# Numba checks every integer ``//`` and ``%`` for a zero divisor and raises
# ZeroDivisionError, which links its exception runtime into the kernel; kernels are
# loaded without Numba (kernels.cpu.native), so they must not have a raise path.


def _int_binop(signed_op: str, unsigned_op: str):
    @intrinsic
    def op(typingctx, a, b):
        if not (isinstance(a, types.Integer) and a == b):
            return None

        def codegen(context, builder, sig, args):
            name = signed_op if sig.args[0].signed else unsigned_op
            return getattr(builder, name)(args[0], args[1])

        return a(a, b), codegen

    return op


_div_raw = _int_binop("sdiv", "udiv")  # truncating; divisor must be non-zero (and not -1
_rem_raw = _int_binop("srem", "urem")  # with the minimum dividend): callers guard both
# ``a // b`` and ``a % b`` for index arithmetic (``a >= 0`` and ``b >= 1`` by
# construction): the intrinsics themselves, which Numba types and lowers as one call,
# where an ``inline="always"`` wrapper had its IR copied into every call site
index_div = _div_raw
index_rem = _rem_raw


@njit(inline="always")
def floordiv_int(a, b):
    """NumPy's integer ``floor_divide``: floors; a zero divisor gives 0; the minimum
    value divided by -1 wraps to itself."""
    zero = a - a
    if b == zero:
        return zero
    if b == zero - 1:
        return zero - a
    q = _div_raw(a, b)
    r = a - q * b
    if r != zero and ((r < zero) != (b < zero)):
        q = q - 1
    return q


@njit(inline="always")
def remainder_int(a, b):
    """NumPy's integer ``remainder``: the sign of the divisor; a zero divisor gives 0."""
    zero = a - a
    if b == zero or b == zero - 1:
        return zero
    r = _rem_raw(a, b)
    if r != zero and ((r < zero) != (b < zero)):
        r = r + b
    return r


# ---- windows of an operand ------------------------------------------------------------
# A generated kernel views each operand's run for a row (or for its [lo, hi) share) as a
# 1-D array. Its offsets are in bounds by construction, so the view is built directly:
# a slice costs Numba ~7 ms of compile time each (its bounds are clamped and
# normalised), and a kernel takes one per operand. The elements read are the same.
def _window_codegen(strided: bool):
    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = make_array(aryty)(context, builder, args[0])
        start, n = (context.cast(builder, v, t, types.intp)
                    for v, t in zip(args[1:3], sig.args[1:3]))
        step = ary.itemsize
        if strided:
            step = builder.mul(context.cast(builder, args[3], sig.args[3], types.intp), step)
        # not ``inbounds``: a window of an empty operand (never read) may point past it
        data = builder.gep(ary.data, [start])
        return make_view(context, builder, aryty, ary, sig.return_type, data, [n],
                         [step])._getvalue()
    return codegen


def _is_vector(a) -> bool:
    return isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"


@intrinsic
def window(typingctx, a, start, n):
    """``a[start:start + n]`` of a C-contiguous 1-D array, for ``0 <= start`` and
    ``start + n <= len(a)`` (or ``n == 0``)."""
    if _is_vector(a) and isinstance(start, types.Integer) and isinstance(n, types.Integer):
        return a(a, start, n), _window_codegen(False)
    return None


def _pointer_view(context, builder, arr, ptr, first, dims):
    """The C-contiguous ``arr`` (an array type) of shape ``dims`` (LLVM integers) whose
    first element is element ``first`` (or 0, for None) of the C pointer ``ptr``."""
    lt = context.get_data_type(arr.dtype)
    data = builder.bitcast(ptr, lt.as_pointer())
    if first is not None:
        data = builder.gep(data, [first])
    size = context.get_constant(types.intp, context.get_abi_sizeof(lt))
    strides = [size]
    for d in reversed(dims[1:]):
        strides.insert(0, builder.mul(d, strides[0]))
    out = make_array(arr)(context, builder)
    populate_array(out, data=data, shape=list(dims), strides=strides, itemsize=size,
                   meminfo=None)
    return out._getvalue()


def _intp_args(context, builder, sig, args, which):
    return [context.cast(builder, args[i], sig.args[i], types.intp) for i in which]


@intrinsic
def address(typingctx, a, start):
    """The address of ``a[start]`` (a C-contiguous 1-D array), as an integer: a pointer
    for a C function a kernel calls (``blas_calls``), without ``a.ctypes``' object."""
    if _is_vector(a) and isinstance(start, types.Integer):
        def codegen(context, builder, sig, args):
            ary = make_array(sig.args[0])(context, builder, args[0])
            first = context.cast(builder, args[1], sig.args[1], types.intp)
            return builder.ptrtoint(builder.gep(ary.data, [first]),
                                    context.get_value_type(types.uintp))
        return types.uintp(a, start), codegen
    return None


@intrinsic
def ptr_window(typingctx, p, start, n, dtype):
    """The 1-D ``dtype`` array of ``n`` elements from element ``start`` of the C pointer
    ``p`` (an operand, or a flat kernel's ``[lo, hi)`` share of one): what ``carray``
    and then ``window`` give, for half their compile time."""
    if p == types.voidptr and isinstance(dtype, types.NumberClass) and \
            isinstance(start, types.Integer) and isinstance(n, types.Integer):
        arr = types.Array(dtype.instance_type, 1, "C")

        def codegen(context, builder, sig, args):
            first, count = _intp_args(context, builder, sig, args, (1, 2))
            return _pointer_view(context, builder, arr, args[0], first, [count])
        return arr(p, start, n, dtype), codegen
    return None


@intrinsic
def ptr_matrix(typingctx, p, rows, cols, dtype):
    """The C-contiguous ``rows`` x ``cols`` ``dtype`` array at the C pointer ``p`` (a
    kernel's stride tables): what ``carray(p, (rows, cols), dtype)`` gives, typed and
    lowered directly instead of through ``carray``'s overload."""
    if p == types.voidptr and isinstance(dtype, types.NumberClass) and \
            isinstance(rows, types.Integer) and isinstance(cols, types.Integer):
        arr = types.Array(dtype.instance_type, 2, "C")

        def codegen(context, builder, sig, args):
            dims = _intp_args(context, builder, sig, args, (1, 2))
            return _pointer_view(context, builder, arr, args[0], None, dims)
        return arr(p, rows, cols, dtype), codegen
    return None


@intrinsic
def strided_window(typingctx, a, start, n, step):
    """``a[start:start + (n - 1) * step + 1:step]`` of a C-contiguous 1-D array, in
    bounds as for ``window``: ``step`` is a stride classed general (never 0 or 1, and
    a slice's zero-step check would be a raise path)."""
    if _is_vector(a) and all(isinstance(t, types.Integer) for t in (start, n, step)):
        return a.copy(layout="A")(a, start, n, step), _window_codegen(True)
    return None
