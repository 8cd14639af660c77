"""Special functions of the inverse-CDF draws, compiled (numba) so that numba and numpy code
consume a realization's random stream identically: the standard normal CDF and its inverse."""

import math

import numpy as np
from numba import njit


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
