"""Random streams: one seeded generator per realization, independent of everything else.

Realization ``index`` of seed ``seed`` draws all its random numbers from
``numpy.random.default_rng(SeedSequence([seed, index]))``: the same whatever other
realizations run, on however many MPI ranks.

Patch tests draw from counter-based streams instead (:class:`CounterStream`): Philox keyed by
``(seed, realization, probed state)`` with the test as its counter, so that a compiled loop
over many tests rewinds one generator per test instead of creating one.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


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


# ----------------------------------------------------------------------- PCG64 drawn inline
# numpy's PCG64 (the realization streams): a 128-bit LCG ``s <- s M + inc`` whose output is
# the XSL-RR of the new state, ``random()`` its top 53 bits times 2^-53 (numpy's pcg64.h and
# ``next_double``). Compiled loops that draw many uniforms at once (the renewal of a cell: 45)
# step it in registers on a view of the generator's own C state instead of calling numpy's
# ``next_double`` through a function pointer once per draw (5 ns each): the same numbers, and
# the Generator stays where it would have been, since the view IS its state.
PCG64_MULT_HI, PCG64_MULT_LO = 0x2360ED051FC65DA4, 0x4385DF649FCCF645


@intrinsic
def _pcg64_step(typingctx, lo, hi, inc_lo, inc_hi):
    """``(lo', hi', out)``: one PCG64 step of the state ``hi:lo`` with increment
    ``inc_hi:inc_lo`` (128-bit arithmetic in LLVM's i128) and its 64-bit XSL-RR output."""
    sig = types.UniTuple(types.uint64, 3)(types.uint64, types.uint64, types.uint64,
                                          types.uint64)

    def codegen(context, builder, signature, args):
        i128, i64 = ir.IntType(128), ir.IntType(64)
        sixty4 = ir.Constant(i128, 64)

        def wide(a, b):  # hi:lo as i128
            return builder.or_(builder.shl(builder.zext(b, i128), sixty4),
                               builder.zext(a, i128))

        mult = ir.Constant(i128, (PCG64_MULT_HI << 64) | PCG64_MULT_LO)
        s = builder.add(builder.mul(wide(args[0], args[1]), mult), wide(args[2], args[3]))
        nlo = builder.trunc(s, i64)
        nhi = builder.trunc(builder.lshr(s, sixty4), i64)
        rot = builder.lshr(nhi, ir.Constant(i64, 58))
        fshr = builder.module.declare_intrinsic("llvm.fshr", [i64],
                                                ir.FunctionType(i64, [i64, i64, i64]))
        x = builder.xor(nhi, nlo)
        out = builder.call(fshr, [x, x, rot])  # rotate right by rot
        return context.make_tuple(builder, signature.return_type, [nlo, nhi, out])

    return sig, codegen


@njit(cache=True, inline="always")
def pcg64_double(lo, hi, inc_lo, inc_hi):
    """``(lo', hi', u)``: the next ``random()`` of a PCG64 generator in state ``hi:lo``."""
    lo, hi, out = _pcg64_step(lo, hi, inc_lo, inc_hi)
    return lo, hi, np.float64(out >> np.uint64(11)) * (1.0 / 9007199254740992.0)


def pcg64_view(rng: np.random.Generator) -> np.ndarray:
    """The C state of ``rng``'s PCG64 as 4 uint64 ``[state lo, state hi, inc lo, inc hi]``
    that compiled code reads and writes (:func:`pcg64_double`), or an empty array when its bit
    generator is not numpy's PCG64 (then compiled code draws through ``rng``). The view does
    not keep ``rng`` alive: the caller holds both. The layout is checked against numpy's
    ``state`` dict."""
    import ctypes

    bg = rng.bit_generator
    if type(bg) is not np.random.PCG64:
        return np.empty(0, np.uint64)
    ptr = ctypes.c_uint64.from_address(bg.ctypes.state_address).value
    view = np.ctypeslib.as_array((ctypes.c_uint64 * 4).from_address(ptr))
    s = bg.state["state"]
    mask = (1 << 64) - 1
    if [int(v) for v in view] != [s["state"] & mask, s["state"] >> 64, s["inc"] & mask,
                                  s["inc"] >> 64]:
        raise RuntimeError("numpy's PCG64 state layout is not the expected one")
    return view
