"""Random streams: one seeded generator per realization, independent of everything else.

Realization ``index`` of seed ``seed`` draws all its random numbers from
``numpy.random.default_rng(SeedSequence([seed, index]))``: the same whatever other
realizations run, on however many MPI ranks.

Patch tests draw from counter-based streams instead (:class:`CounterStream`): Philox keyed by
``(seed, realization, probed state)`` with the test as its counter, so that a compiled loop
over many tests rewinds one generator per test instead of creating one.
"""

import numpy as np


def realization_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of realization ``index``: independent of how many others run."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


# ----------------------------------------------------------------------------- counter-based
def probe_key(seed: int, index: int, state: int) -> np.ndarray:
    """The 128-bit Philox key of the patch tests of one probed state of one realization."""
    return np.random.SeedSequence([int(seed), int(index), int(state)]).generate_state(
        2, np.uint64)


def counter_generator(key, counter) -> np.random.Generator:
    """The counter-based stream of one test: ``Philox(key, counter = [0, *counter])``.

    ``counter`` (three unsigned 64-bit words) names the test (position, size, orientation), so
    its random numbers do not depend on which other tests run, in which order or on which rank.
    """
    return np.random.Generator(np.random.Philox(key=np.asarray(key, np.uint64),
                                                counter=np.array([0, *counter], np.uint64)))


class CounterStream:
    """One Philox generator whose counter compiled code rewinds per test.

    Compiled loops take ``gen`` (a numpy Generator) and, before each test, write
    ``ctr[:] = [0, c1, c2, c3]`` and ``bits[BUFFER_POS] = 4``, ``bits[HAS_UINT32] = 0`` (an
    empty output buffer): the draws that follow are those of ``counter_generator(key, (c1, c2,
    c3))``, without building a generator per test. ``ctr`` and ``bits`` are views of the
    bit generator's C state (numpy's ``philox_state``: counter and key pointers, buffer
    position, buffer, cached 32-bit half); the layout is checked against
    :func:`counter_generator` on construction.
    """

    BUFFER_POS, HAS_UINT32 = 4, 14  # int32 slots of philox_state

    def __init__(self, key):
        import ctypes

        self.key = np.asarray(key, np.uint64)
        self.gen = counter_generator(self.key, (0, 0, 0))
        addr = self.gen.bit_generator.ctypes.state_address
        ctr_addr = ctypes.c_uint64.from_address(addr).value
        self.ctr = np.ctypeslib.as_array((ctypes.c_uint64 * 4).from_address(ctr_addr))
        self.bits = np.ctypeslib.as_array((ctypes.c_int32 * 16).from_address(addr))
        probe = (3, 1, 4)
        self.rewind(probe)
        if not np.array_equal(self.gen.random(6), counter_generator(self.key, probe).random(6)):
            raise RuntimeError("numpy's Philox state layout is not the expected one")

    def rewind(self, counter) -> None:
        """Python form of the compiled rewind (tests, checks)."""
        self.ctr[:] = [0, *counter]
        self.bits[self.BUFFER_POS] = 4
        self.bits[self.HAS_UINT32] = 0
