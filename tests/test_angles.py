"""Degree wraps (femplast.angles): pure-shear orientation mod 180, plain angle mod 360."""

import numpy as np
import pytest

from femplast.angles import wrap_angle_deg, wrap_orientation_deg
from femplast.fe.elasticity import M_vector


@pytest.mark.parametrize("a, want", [
    (0.0, 0.0), (45.0, 45.0), (89.5, 89.5), (90.0, -90.0), (-90.0, -90.0), (135.0, -45.0),
    (-135.0, 45.0), (180.0, 0.0), (270.0, -90.0), (-270.0, -90.0), (360.0, 0.0),
    (1000.0, -80.0), (-1000.0, 80.0),
])
def test_orientation_wraps_mod_180_into_half_open_range(a, want):
    assert wrap_orientation_deg(a) == pytest.approx(want, abs=1e-12)
    assert -90.0 <= wrap_orientation_deg(a) < 90.0


@pytest.mark.parametrize("a, want", [
    (0.0, 0.0), (135.0, 135.0), (180.0, 180.0), (-180.0, 180.0), (190.0, -170.0),
    (-190.0, 170.0), (270.0, -90.0), (360.0, 0.0), (540.0, 180.0), (-540.0, 180.0),
    (1000.0, -80.0), (-1000.0, 80.0),
])
def test_angle_wraps_mod_360_into_half_open_range(a, want):
    assert wrap_angle_deg(a) == pytest.approx(want, abs=1e-12)
    assert -180.0 < wrap_angle_deg(a) <= 180.0


def test_the_two_wraps_differ_where_their_meanings_do():
    # an unload turns the loading angle by 90 degrees: 45 -> 135 keeps its sign as an angle,
    # while as a pure-shear orientation 135 is -45
    assert wrap_angle_deg(45.0 + 90.0) == 135.0
    assert wrap_orientation_deg(45.0 + 90.0) == -45.0


def test_orientation_wrap_keeps_the_slip_tensor_and_angle_wrap_the_direction():
    a = np.random.default_rng(0).uniform(-2000.0, 2000.0, 500)
    wo = np.array([wrap_orientation_deg(x) for x in a])
    wa = np.array([wrap_angle_deg(x) for x in a])
    # M(alpha) has period 180 degrees (eq. 3): the orientation wrap leaves it unchanged
    assert np.allclose(M_vector(np.radians(wo)), M_vector(np.radians(a)), atol=1e-9)
    # the angle wrap is a multiple of 360 away; the orientation wrap a multiple of 180
    assert np.allclose((a - wa) / 360.0, np.round((a - wa) / 360.0), atol=1e-9)
    assert np.allclose((a - wo) / 180.0, np.round((a - wo) / 180.0), atol=1e-9)
    assert np.all(np.abs(wa) <= 180.0) and np.all(np.abs(wo) <= 90.0)
