"""Random streams (femplast.streams): the inline PCG64 step of compiled loops is numpy's."""

import numpy as np
from numba import njit

from femplast.streams import counter_generator, pcg64_double, pcg64_view, realization_rng


@njit(cache=True)
def _draw(view, n):
    lo, hi, inc_lo, inc_hi = view[0], view[1], view[2], view[3]
    out = np.empty(n)
    for i in range(n):
        lo, hi, out[i] = pcg64_double(lo, hi, inc_lo, inc_hi)
    view[0], view[1] = lo, hi
    return out


def test_inline_pcg64_draws_numpys_doubles_and_moves_the_generator():
    g, h = realization_rng(7, 3), realization_rng(7, 3)
    view = pcg64_view(g)
    assert view.shape == (4,) and view.dtype == np.uint64
    a = _draw(view, 20000)
    assert np.array_equal(a, h.random(20000))
    assert g.bit_generator.state == h.bit_generator.state  # the view is the generator's state
    assert g.random() == h.random()
    h.bit_generator.state = g.bit_generator.state  # a restored state is seen through the view
    g.bit_generator.state = realization_rng(1, 1).bit_generator.state
    assert np.array_equal(_draw(view, 3), realization_rng(1, 1).random(3))


def test_pcg64_view_is_empty_for_other_bit_generators():
    assert pcg64_view(counter_generator(np.array([1, 2], np.uint64), (0, 0, 0))).shape == (0,)
    assert pcg64_view(np.random.Generator(np.random.PCG64DXSM(1))).shape == (0,)
