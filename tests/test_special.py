"""femplast.special: the branch-free log / exp / sincos of the renewal (fdlibm's algorithms)
against libm, compiled and plain Python bit for bit."""

import math

import numpy as np
import pytest
from numba import njit

from femplast.special import exp_small, log_pos, sincos_small


@njit(cache=True)
def _apply(kind, x, a, b):
    for i in range(x.size):
        if kind == 0:
            a[i] = log_pos(x[i])
        elif kind == 1:
            a[i] = exp_small(x[i])
        else:
            a[i], b[i] = sincos_small(x[i])


def _ulps(got, want):
    return np.abs(got - want) / np.spacing(np.abs(want))


def _run(kind, x):
    a, b = np.empty_like(x), np.empty_like(x)
    _apply(kind, x, a, b)
    return a, b


def test_log_within_one_ulp_of_libm_on_the_renewal_domain():
    rng = np.random.default_rng(0)
    x = np.concatenate([1.0 - rng.random(200_000), np.exp(rng.uniform(-700, 700, 100_000)),
                        2.0 ** -np.arange(1, 54), [1.0, 2.0, 0.5, 1.0 + 2 ** -52]])
    got, _ = _run(0, x)
    want = np.array([math.log(v) for v in x])
    nz = want != 0.0
    assert _ulps(got[nz], want[nz]).max() <= 1.0 and got[~nz].tolist() == [0.0]


def test_exp_within_one_ulp_of_libm():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-40, 4, 200_000), rng.uniform(-700, 700, 100_000),
                        [0.0, 1.0, -1.0, math.log(2.0)]])
    got, _ = _run(1, x)
    want = np.array([math.exp(v) for v in x])
    assert _ulps(got, want).max() <= 1.0 and got[-4] == 1.0


def test_sincos_within_one_ulp_of_libm_also_next_to_multiples_of_half_pi():
    rng = np.random.default_rng(2)
    near = np.array([k * math.pi / 2 for k in range(-2, 3)])
    x = np.concatenate([rng.uniform(-math.pi, math.pi, 200_000),
                        (near[:, None] + np.arange(-8, 9) * 4e-16).ravel(), [1e-300, -2.5]])
    s, c = _run(2, x)
    ws, wc = np.array([math.sin(v) for v in x]), np.array([math.cos(v) for v in x])
    assert _ulps(s, ws).max() <= 1.0 and _ulps(c, wc).max() <= 1.0


@pytest.mark.parametrize("x", [0.3, 1.0 - 2.0 ** -53, 2.0 ** -53, 36.7])
def test_plain_python_is_the_compiled_function_bit_for_bit(x):
    assert log_pos.py_func(x) == log_pos(x)
    assert exp_small.py_func(-x) == exp_small(-x)
    assert sincos_small.py_func(x - 1.0) == sincos_small(x - 1.0)
