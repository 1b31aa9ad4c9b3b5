"""The truth a strain measurement is scored against: strain of a known field, relaxation of a twin.

Used by the tests and ``benchmarks/bench_lattice.py`` with the fields of
:mod:`napari_stem_defects.simulate.strain_field` put into digital twins.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .strain import strain_from_gradient


def true_strain(field, points: np.ndarray, cells: np.ndarray | None = None, classes: np.ndarray | None = None,
                step: float = 0.05) -> np.ndarray:
    """exx, eyy, exy and rotation (degrees) of ``field`` at undisplaced ``points`` (y, x), by central differences.

    Returns
    -------
    ndarray of shape (N, 4)
        Columns exx, eyy, exy, rotation_deg.
    """
    p = np.asarray(points, float)
    grad = np.zeros((len(p), 2, 2))  # [component (x, y), derivative (x, y)]
    for k, axis in enumerate((1, 0)):  # d/dx then d/dy
        e = np.zeros(2)
        e[axis] = step
        du = (field(p + e, cells, classes) - field(p - e, cells, classes)) / (2 * step)
        grad[:, 0, k] = du[:, 1]
        grad[:, 1, k] = du[:, 0]
    return strain_from_gradient(grad)


def true_shell_relaxation(twin, centres: np.ndarray, defect_class: str = "V_M", shell: float = 1.0) -> float:
    """Mean radial displacement (pm) of a twin's metals ``shell`` lattice constants from ``centres``, from its truth.

    Displacements are the metal sites' positions less their ideal lattice positions; metals of cells of
    ``defect_class`` (the vacancies themselves) are left out.
    """
    cells = twin.cells
    a_px = twin.material.a / twin.pixel_size
    ideal = twin.lattice.metal_positions(cells[["i", "j"]].to_numpy())
    actual = twin.sites.set_index("site_id").loc[cells["m_site_id"].clip(lower=0), ["y_px", "x_px"]].to_numpy()
    tree = cKDTree(ideal)
    values = []
    for c in np.asarray(centres, float).reshape(-1, 2):
        for k in tree.query_ball_point(c, (shell + 0.1) * a_px):
            d = ideal[k] - c
            r = np.hypot(*d)
            if r > (shell - 0.5) * a_px and cells["class"].iloc[k] != defect_class and cells["m_site_id"].iloc[k] >= 0:
                values.append(np.dot(actual[k] - ideal[k], d / r))
    return float(np.mean(values)) * twin.pixel_size * 100 if values else float("nan")


__all__ = ["true_shell_relaxation", "true_strain"]
