"""Special functions of the inverse-CDF draws, compiled (numba) so that numba and numpy code
consume a realization's random stream identically: the standard normal CDF and its inverse,
and a branch-free ``log`` / ``exp`` (fdlibm's algorithms) whose loops vectorize."""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload


@njit(cache=True)
def ndtr(z: float) -> float:
    """Standard normal CDF."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


@njit(cache=True)
def ndtri(u: float) -> float:
    """Inverse standard normal CDF: Acklam's rational approximation + one Halley step."""
    if u <= 0.0:
        return -np.inf
    if u >= 1.0:
        return np.inf
    if u > 0.5:  # 1 - u is exact here: refine in the lower tail, where ndtr is accurate
        return -_ndtri_low(1.0 - u)
    return _ndtri_low(u)


@njit(cache=True)
def _ndtri_low(u: float) -> float:
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
         1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
         6.680131188771972e+01, -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
         -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
         3.754408661907416e+00)
    lo = 0.02425
    if u < lo or u > 1.0 - lo:
        q = math.sqrt(-2.0 * math.log(u if u < lo else 1.0 - u))
        x = ((((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5])
             / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0))
        if u > lo:
            x = -x
    else:
        q = u - 0.5
        r = q * q
        x = ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
             / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0))
    e = ndtr(x) - u
    g = e * math.sqrt(2.0 * math.pi) * math.exp(0.5 * x * x)
    return x - g / (1.0 + 0.5 * x * g)


# ---------------------------------------------------------------------------- log and exp
# fdlibm (Sun Microsystems, e_log.c and e_exp.c): the same polynomials and reductions, without
# the branches for special arguments, so that a loop of them vectorizes (libm's log1p and pow
# are opaque calls, ~20 ns each). Both are within ~1 ulp on their domains.
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_LG = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
       2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01,
       1.479819860511658591e-01)
_P = (1.66666666666666019037e-01, -2.77777777770155933842e-03, 6.61375632143793436117e-05,
      -1.65339022054652515390e-06, 4.13813679705723846039e-08)
_INV_LN2 = 1.44269504088896338700e+00


@intrinsic
def _bits_llvm(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def _double_llvm(typingctx, i):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@intrinsic
def _div_llvm(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fdiv(args[0], args[1])
    return types.float64(types.float64, types.float64), codegen


def _bits(x):
    """The IEEE-754 bits of a double as an int64 (compiled: a register move)."""
    return np.float64(x).view(np.int64)


def _double(i):
    """The double whose IEEE-754 bits are the int64 ``i``."""
    return np.int64(i).view(np.float64)


def _div(a, b):
    """``a / b``; compiled without numba's ZeroDivisionError branch, which stops LLVM from
    vectorizing the loops that call it (``b`` is never 0 here)."""
    return a / b


@overload(_bits, inline="always")
def _ol_bits(x):
    return lambda x: _bits_llvm(x)


@overload(_double, inline="always")
def _ol_double(i):
    return lambda i: _double_llvm(i)


@overload(_div, inline="always")
def _ol_div(a, b):
    return lambda a, b: _div_llvm(a, b)


@njit(cache=True, inline="always")
def log_pos(x: float) -> float:
    """Natural log of a positive normal double (fdlibm ``__ieee754_log``, its general path):
    ``x = 2^k (1 + f)`` with ``1 + f`` in [sqrt(2)/2, sqrt(2)), ``log(1 + f) = 2 atanh(s)``,
    ``s = f / (2 + f)``, by a degree-14 polynomial. No branches; 0, subnormals, inf and nan
    are not handled (the caller's domain excludes them)."""
    ix = _bits(x)
    hx = ix >> 32
    k = (hx >> 20) - 1023
    hx &= 0x000FFFFF
    i = (hx + 0x95F64) & 0x100000
    k += i >> 20
    f = _double(((hx | (i ^ 0x3FF00000)) << 32) | (ix & 0xFFFFFFFF)) - 1.0
    s = _div(f, 2.0 + f)
    dk = float(k)
    z = s * s
    w = z * z
    t1 = w * (_LG[1] + w * (_LG[3] + w * _LG[5]))
    t2 = z * (_LG[0] + w * (_LG[2] + w * (_LG[4] + w * _LG[6])))
    r = t2 + t1
    hfsq = 0.5 * f * f
    return dk * _LN2_HI - ((hfsq - (s * (hfsq + r) + dk * _LN2_LO)) - f)


@njit(cache=True, inline="always")
def exp_small(x: float) -> float:
    """``exp(x)`` for ``|x| < 700`` (fdlibm ``__ieee754_exp``): ``x = k ln2 + r``,
    ``|r| <= ln2 / 2``, a rational approximation of ``exp(r)``, then ``2^k`` added to the
    exponent bits. No branches; outside ``|x| < 700`` the result is wrong (not checked)."""
    k = math.floor(x * _INV_LN2 + 0.5)
    hi = x - k * _LN2_HI
    lo = k * _LN2_LO
    r = hi - lo
    t = r * r
    c = r - t * (_P[0] + t * (_P[1] + t * (_P[2] + t * (_P[3] + t * _P[4]))))
    y = 1.0 - ((lo - _div(r * c, 2.0 - c)) - hi)
    return _double(_bits(y) + (np.int64(k) << 52))


# fdlibm k_sin.c / k_cos.c: sin and cos on [-pi/4, pi/4] (argument hi + lo)
_S = (-1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04,
      2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10)
_C = (4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05,
      -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11)
_PIO2_1, _PIO2_2, _PIO2_2T = (1.57079632673412561417e+00, 6.07710050630396597660e-11,
                              2.02226624879595063154e-21)
_INV_PIO2 = 6.36619772367581382433e-01


@njit(cache=True, inline="always")
def sincos_small(x: float):
    """``(sin x, cos x)`` for ``|x| <= 4`` (fdlibm: ``x = n pi/2 + r``, ``r`` = hi + lo to
    ~1e-37, the ``__kernel_sin`` / ``__kernel_cos`` polynomials, the quadrant by selects). No
    branches, so a loop of them vectorizes; within ~1 ulp."""
    fn = float(math.floor(x * _INV_PIO2 + 0.5))
    # fdlibm's medium reduction, second iteration always (x near a multiple of pi/2)
    t = x - fn * _PIO2_1  # exact: _PIO2_1 and _PIO2_2 have 33 bits, |fn| <= 3
    w = fn * _PIO2_2
    z = t - w
    w = fn * _PIO2_2T - ((t - z) - w)
    y = z - w
    lo = (z - y) - w
    # __kernel_sin(y, lo, 1)
    zz = y * y
    v = zz * y
    r = _S[1] + zz * (_S[2] + zz * (_S[3] + zz * (_S[4] + zz * _S[5])))
    sn = y - ((zz * (0.5 * lo - v * r) - lo) - v * _S[0])
    # __kernel_cos(y, lo): |y| <= pi/4 < 0.78125, so qx = 0 (its branches for |y| > 0.3)
    rc = zz * (_C[0] + zz * (_C[1] + zz * (_C[2] + zz * (_C[3] + zz * (_C[4] + zz * _C[5])))))
    hz = 0.5 * zz
    ww = 1.0 - hz
    cs = ww + (((1.0 - ww) - hz) + (zz * rc - y * lo))
    # quadrant fn mod 4: swap for odd, negate sin for 2 and 3, cos for 1 and 2
    q = fn - 4.0 * math.floor(0.25 * fn)
    odd = q == 1.0 or q == 3.0
    s_out = cs if odd else sn
    c_out = sn if odd else cs
    s_out = -s_out if q >= 2.0 else s_out
    c_out = -c_out if (q == 1.0 or q == 2.0) else c_out
    return s_out, c_out
