"""Refine column positions with atomap's 2D Gaussian fits (the peer of our batched refinement).

Run with the atomap venv's python only (``bash benchmarks/atomap_env.sh`` makes it)::

    benchmarks/.venv-atomap/bin/python benchmarks/_atomap_refine.py IN.npz OUT.npz

IN.npz holds ``image`` (H, W), ``positions`` (N, 2) starting (y, x) in pixels, ``pixel_size``
(Å per pixel) and ``mask_radius`` (px). OUT.npz gets ``positions`` (N, 2) refined (y, x),
``amplitude`` (N,) (0 where atomap gave up fitting and fell back to centre of mass),
``seconds`` (wall time of the refinement call alone), ``cpu_seconds`` (CPU time of this process
during that call), ``import_seconds`` and ``setup_seconds``.

Choices, so that both methods solve the same problem:

* One Sublattice holds the columns to refine, built from the starting positions converted to
  atomap's (x, y) order; the fitted positions are converted back to (y, x).
* ``mask_radius`` is passed explicitly and equals the radius given to our refinement. It is the
  same as atomap's default ``percent_to_nn=0.4`` for a sublattice holding every column of a
  2H-MX2 image (the closest neighbour of any column is then the metal-chalcogen distance nn),
  and it does not depend on which columns are in the (random) subset.
* ``rotation_enabled=True`` (atomap's default): an elliptical, rotating Gaussian per column.
* The timer is inside this process around ``refine_atom_positions_using_2d_gaussian`` only, so
  neither Python start-up, the HyperSpy import nor the file transfer counts against atomap.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np


def load_job(path: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Read the image, starting (y, x) positions, pixel size and mask radius from an .npz.

    Parameters
    ----------
    path : str
        Input .npz file.

    Returns
    -------
    image : ndarray of float64, shape (H, W)
    positions : ndarray of float64, shape (N, 2)
        Starting (y, x) in pixels.
    pixel_size : float
        Å per pixel.
    mask_radius : float
        Fit radius in pixels.
    """
    with np.load(path) as data:
        image = np.asarray(data["image"], dtype=np.float64)
        positions = np.asarray(data["positions"], dtype=np.float64).reshape(-1, 2)
        pixel_size = float(data["pixel_size"])
        mask_radius = float(data["mask_radius"])
    return image, positions, pixel_size, mask_radius


def refine(image: np.ndarray, positions_yx: np.ndarray, pixel_size: float,
           mask_radius: float) -> dict[str, np.ndarray | float]:
    """Run atomap's Gaussian refinement on one sublattice of the given columns.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The image (non-negative counts).
    positions_yx : ndarray, shape (N, 2)
        Starting (y, x) positions in pixels.
    pixel_size : float
        Å per pixel (stored on the sublattice; fitting is in pixels).
    mask_radius : float
        Radius in pixels of the disc fitted around each column.

    Returns
    -------
    dict
        ``positions`` (N, 2) refined (y, x), ``amplitude`` (N,), ``seconds``, ``cpu_seconds``,
        ``import_seconds`` and ``setup_seconds``.
    """
    t0 = time.perf_counter()
    import atomap.api as am
    t_import = time.perf_counter() - t0

    t0 = time.perf_counter()
    xy = positions_yx[:, ::-1].copy()  # atomap wants [[x0, y0], [x1, y1], ...]
    sublattice = am.Sublattice(xy, image, pixel_size=pixel_size)
    t_setup = time.perf_counter() - t0

    t0, c0 = time.perf_counter(), time.process_time()
    sublattice.refine_atom_positions_using_2d_gaussian(
        mask_radius=mask_radius, rotation_enabled=True, show_progressbar=False
    )
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0

    refined = np.column_stack([sublattice.y_position, sublattice.x_position]).astype(np.float64)
    amplitude = np.array([atom.amplitude_gaussian for atom in sublattice.atom_list], dtype=np.float64)
    return {"positions": refined, "amplitude": amplitude, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "import_seconds": t_import, "setup_seconds": t_setup}


def main(argv: list[str]) -> int:
    """Command-line entry: ``_atomap_refine.py IN.npz OUT.npz``."""
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    image, positions, pixel_size, mask_radius = load_job(argv[1])
    result = refine(image, positions, pixel_size, mask_radius)
    np.savez(argv[2], **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
