"""Random streams: one seeded generator per realization, independent of everything else.

Realization ``index`` of seed ``seed`` draws all its random numbers from
``numpy.random.default_rng(SeedSequence([seed, index]))``: the same whatever other
realizations run, on however many MPI ranks.
"""

import numpy as np


def realization_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of realization ``index``: independent of how many others run."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
