"""Angles in degrees: two wraps for two meanings (foundation layer, imports nothing).

* :func:`wrap_orientation_deg`: the orientation ``alpha`` of a pure shear (the loading
  direction of a patch test or of the box, eq. 3-4 of the tensorial paper) is defined modulo
  180 degrees: ``M(alpha + 180) = M(alpha)``. Wrapped to ``[-90, 90)``, so orientations can
  be compared (``abs(wrap_orientation_deg(a - b)) < tol``).
* :func:`wrap_angle_deg`: a plain angle modulo 360 degrees, wrapped to ``(-180, 180]``: keeps
  a signed loading angle bounded (the protocol pipeline's unloading turns it by 90 degrees)
  without identifying ``alpha`` with ``alpha + 180``, so the stored angle stays the one the
  user would expect.
* :func:`drive_direction_deg`: what a loading orientation means for a specimen driven by its
  boundaries (femplast.fe.boundary): the box's ``M(alpha + 90) = -M(alpha)`` carried over,
  +1 (drive forward) or -1 (backward), for multiples of 90 degrees only.
"""

import math


def wrap_orientation_deg(a: float) -> float:
    """``a`` modulo 180 degrees in ``[-90, 90)`` (orientation of a pure shear)."""
    return (a + 90.0) % 180.0 - 90.0


def wrap_angle_deg(a: float) -> float:
    """``a`` modulo 360 degrees in ``(-180, 180]``."""
    a = math.fmod(a, 360.0)
    if a > 180.0:
        a -= 360.0
    if a <= -180.0:
        a += 360.0
    return a


def drive_direction_deg(a: float) -> int | None:
    """``cos 2a`` as +1 / -1 when ``a`` is a multiple of 90 degrees (the drive direction of a
    specimen at loading orientation ``a``), else None."""
    c = math.cos(math.radians(2.0 * float(a)))
    return int(round(c)) if abs(abs(c) - 1.0) < 1e-12 else None
