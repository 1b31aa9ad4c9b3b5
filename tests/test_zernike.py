"""Zernike moments: exact values on analytic patches, rotation invariance of the magnitudes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.integrate import trapezoid

from napari_stem_defects.columns.zernike import (
    radial_polynomial, zernike_features, zernike_indices, zernike_moments,
)

S = 255


def _grid():
    y, x = (np.mgrid[:S, :S] + 0.5) * 2 / S - 1
    y = -y
    return np.hypot(x, y), np.arctan2(y, x)


@pytest.mark.parametrize("n, m", [(0, 0), (1, 1), (2, 0), (3, 1), (4, 2), (6, 4), (8, 8)])
def test_each_polynomial_gives_its_own_moment_and_no_other(n, m):
    # f = R_nm cos(m theta) = (V_nm + V_n,-m) / 2: A_nm = 1/2 (1 for m = 0), every other moment 0
    rho, theta = _grid()
    moments = zernike_moments(radial_polynomial(n, m, rho) * np.cos(m * theta), 8)
    k = zernike_indices(8).index((n, m))
    assert moments[k].real == pytest.approx(1.0 if m == 0 else 0.5, abs=0.02)
    assert abs(moments[k].imag) < 0.02
    assert np.abs(np.delete(moments, k)).max() < 0.03


def test_a_sine_pattern_has_an_imaginary_moment():
    rho, theta = _grid()
    a = zernike_moments(radial_polynomial(3, 1, rho) * np.sin(theta), 4)[zernike_indices(4).index((3, 1))]
    assert a.imag == pytest.approx(-0.5, abs=0.02) and abs(a.real) < 0.02


def test_radial_polynomials_are_orthogonal_on_the_unit_disc():
    rho = np.linspace(0, 1, 20001)
    inner = trapezoid(radial_polynomial(4, 0, rho) * radial_polynomial(2, 0, rho) * rho, rho)
    norm = trapezoid(radial_polynomial(4, 0, rho) ** 2 * rho, rho)
    assert abs(inner) < 1e-6 and norm == pytest.approx(1 / (2 * 4 + 2), rel=1e-4)
    with pytest.raises(ValueError, match="not a Zernike index"):
        radial_polynomial(3, 2, rho)


def test_magnitudes_do_not_change_when_the_column_is_rotated():
    # an asymmetric column: a bright blob with a weaker shoulder on one side
    yy, xx = np.mgrid[:121, :121] - 60.0
    blob = np.exp(-(yy ** 2 + xx ** 2) / 60) + 0.6 * np.exp(-((yy - 8) ** 2 + (xx - 14) ** 2) / 30)
    ref = zernike_features(blob, [[60.0, 60.0]], 30.0, n_max=6, samples=61)[0]
    for angle in (30.0, 75.0, 140.0):
        turned = ndimage.rotate(blob, angle, reshape=False, order=3)
        got = zernike_features(turned, [[60.0, 60.0]], 30.0, n_max=6, samples=61)[0]
        assert np.allclose(got, ref, atol=0.01 * ref.max())
    # and they tell a different shape apart
    other = np.exp(-(yy ** 2 + xx ** 2) / 60) + 0.6 * np.exp(-(yy ** 2 + (xx - 16) ** 2) / 8)
    assert np.abs(zernike_features(other, [[60.0, 60.0]], 30.0, n_max=6, samples=61)[0] - ref).max() > 0.05 * ref.max()


def test_bad_input_is_refused_with_a_message():
    with pytest.raises(ValueError, match="square"):
        zernike_moments(np.zeros((5, 7)))
    with pytest.raises(ValueError, match="radius"):
        zernike_features(np.zeros((10, 10)), [[5, 5]], 0.0)
