"""Digital twins: simulated HAADF images of 2H-MX2 monolayers with exact labels."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..materials import Material, parse_material
from .defects import Occupancy, populate, species_string
from .imaging import ImagingParams, apply_drift, column_cross_section, record, render
from .lattice import HoneycombLattice, inside

#: Columns of :attr:`DigitalTwin.sites`.
SITE_COLUMNS = (
    "site_id", "y_px", "x_px", "sublattice", "species", "n_atoms", "defect", "cell_id",
    "cross_section_A2",
)
#: Columns of :attr:`DigitalTwin.cells`.
CELL_COLUMNS = (
    "cell_id", "i", "j", "y_px", "x_px", "m_site_id", "x_site_id", "m_species", "x_species",
    "class",
)


@dataclass
class DigitalTwin:
    """A simulated image with the exact ground truth behind it.

    Attributes
    ----------
    image : ndarray of float32, shape (H, W)
        The recorded image (with noise unless ``imaging.dose`` is None).
    expected : ndarray of float32, shape (H, W)
        Expected counts before noise.
    sites : pandas.DataFrame
        One row per lattice site in the field of view, occupied or empty
        (metal 'M' and chalcogen 'X' sites), plus one per adatom ('H',
        hollow site). Columns :data:`SITE_COLUMNS`: position (y_px, x_px) as
        it appears in the image (drift included), species content ('Mo',
        'S2', 'SSe', 'S', '' for empty), number of atoms, per-site defect
        label, the cell it belongs to and its HAADF cross-section.
    cells : pandas.DataFrame
        One row per unit cell whose metal site is in the field of view:
        indices (i, j), centre, its metal and X2 site ids (-1 when that site
        falls outside), their species and the cell class.
    pixel_size : float
        Å per pixel.
    material : Material
        The host material.
    lattice : HoneycombLattice
        Lattice before drift (basis vectors and origin in pixels).
    imaging : ImagingParams
        Imaging conditions.
    seed : int or None
        Seed that reproduces the twin.
    """

    image: np.ndarray
    expected: np.ndarray
    sites: pd.DataFrame
    cells: pd.DataFrame
    pixel_size: float
    material: Material
    lattice: HoneycombLattice
    imaging: ImagingParams
    seed: int | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nn_px(self) -> float:
        """Metal to chalcogen (in-plane) distance, in pixels: ``a / sqrt(3) / pixel_size``."""
        return float(self.material.a / np.sqrt(3.0) / self.pixel_size)

    @property
    def metadata(self) -> dict[str, Any]:
        """JSON-friendly description of how the twin was made (also a layer's metadata)."""
        extra = {k: v for k, v in self.extra.items() if not isinstance(v, np.ndarray)}  # maps stay out
        return {**simulation_metadata(self.pixel_size, self.material, self.lattice, self.imaging, self.seed),
                **extra}


def simulation_metadata(pixel_size: float, material: Material, lattice: HoneycombLattice,
                        imaging: ImagingParams, seed: int | None) -> dict[str, Any]:
    """What every simulated image's layer metadata says: calibration, material, lattice, imaging, seed."""
    return {
        "pixel_size_A": (pixel_size, pixel_size),
        "calibrated": True,
        "material": material.name,
        "lattice_constant_A": material.a,
        "a1_px": lattice.a1.tolist(),
        "a2_px": lattice.a2.tolist(),
        "origin_px": lattice.origin.tolist(),
        "imaging": imaging.as_dict(),
        "seed": seed,
        "simulated": True,
    }


def simulate_twin(
    material: str | Material = "MoS2",
    shape: tuple[int, int] = (512, 512),
    pixel_size: float = 0.12,
    *,
    rotation_deg: float | None = 0.0,
    defects: Mapping[str, float] | None = None,
    imaging: ImagingParams | None = None,
    seed: int | None = None,
    dopant: str | None = None,
    substituent: str | None = None,
    adatom: str | None = None,
    displacement: Any = None,
) -> DigitalTwin:
    """Simulate a HAADF-STEM image of a 2H-MX2 monolayer with exact labels.

    Parameters
    ----------
    material : str or Material
        Host, e.g. ``"MoS2"``, ``"WSe2"``, ``"MoWSSe"`` or ``"Janus-MoSSe"``.
    shape : tuple of int
        Image shape (H, W) in pixels.
    pixel_size : float
        Å per pixel.
    rotation_deg : float or None
        Lattice rotation in degrees; None draws one at random.
    defects : mapping of str to float, optional
        Fraction of unit cells with each defect type: 'V_X1', 'V_X2', 'V_M',
        'V_X1+V_M', 'V_X2+V_M', 'M_X', 'X_M', 'dopant_M', 'sub_X', 'adatom'.
    imaging : ImagingParams, optional
        Probe, background, scan and dose; defaults to :class:`ImagingParams`.
    seed : int, optional
        Seed; the same seed and arguments give the same twin.
    dopant, substituent, adatom : str, optional
        Elements for dopant_M, sub_X and adatom defects.
    displacement : callable, optional
        A known displacement field put into every site's position (ground truth of strain mapping):
        ``displacement(points, cell_metals, cell_classes)`` gives (dy, dx) px for undisplaced (y, x)
        points, from the undisplaced metal positions and classes of all cells (see
        :mod:`~napari_stem_defects.simulate.strain_field`).

    Returns
    -------
    DigitalTwin

    Examples
    --------
    >>> twin = simulate_twin("MoS2", shape=(128, 128), defects={"V_X1": 0.05}, seed=1)
    >>> twin.image.shape
    (128, 128)
    >>> sorted(twin.sites["sublattice"].unique())
    ['M', 'X']
    """
    mat = parse_material(material)
    imaging = imaging or ImagingParams()
    rng = np.random.default_rng(seed)
    layout = twin_layout(mat, shape, pixel_size, rotation_deg, defects, imaging, rng,
                         dopant=dopant, substituent=substituent, adatom=adatom, displacement=displacement)
    weights = {key: column_cross_section(getattr(layout.occupancy, key), imaging) for key in ("m", "x", "h")}
    positions = np.concatenate(layout.positions)
    cross = np.concatenate([weights["m"], weights["x"], weights["h"]])
    image, expected = render(positions, cross, layout.shape, pixel_size, imaging, rng)

    sites, cells = _tables(layout.ij, layout.positions, layout.inside, layout.occupancy, weights)
    return DigitalTwin(
        image=image,
        expected=expected,
        sites=sites,
        cells=cells,
        pixel_size=float(pixel_size),
        material=mat,
        lattice=layout.lattice,
        imaging=imaging,
        seed=seed,
        extra={"rotation_deg": layout.rotation_deg, "engine": "fast"},
    )


@dataclass
class TwinLayout:
    """Lattice, cells and atoms of a twin before any image is formed (shared by both engines).

    Attributes
    ----------
    shape : tuple of int
        Image shape (H, W).
    lattice : HoneycombLattice
        Lattice before drift, in pixels.
    rotation_deg : float
        Lattice rotation.
    ij : ndarray of shape (n, 2)
        Cells with a site within the field of view plus the probe margin.
    positions : tuple of three ndarray
        Metal, X2 and hollow site positions (y, x) in pixels, drift applied.
    inside : tuple of three ndarray of bool
        Which of those sites lie in the field of view.
    occupancy : Occupancy
        Atoms and labels of every cell.
    """

    shape: tuple[int, int]
    lattice: HoneycombLattice
    rotation_deg: float
    ij: np.ndarray
    positions: tuple[np.ndarray, np.ndarray, np.ndarray]
    inside: tuple[np.ndarray, np.ndarray, np.ndarray]
    occupancy: Occupancy


def twin_layout(
    mat: Material,
    shape: tuple[int, int],
    pixel_size: float,
    rotation_deg: float | None,
    defects: Mapping[str, float] | None,
    imaging: ImagingParams,
    rng: np.random.Generator,
    displacement: Any = None,
    **elements: str | None,
) -> TwinLayout:
    """Draw a twin's lattice (rotation, origin), cells and atoms from ``rng``.

    The fast and the multislice engines both call this first with a fresh
    ``default_rng(seed)``, so twins of the same seed and arguments hold the same atoms.
    ``elements`` are the ``dopant``, ``substituent`` and ``adatom`` of :func:`populate`;
    ``displacement`` moves every site after the atoms are drawn (see :func:`simulate_twin`).
    """
    h, w = (int(s) for s in shape)
    if h < 8 or w < 8:
        raise ValueError(f"image shape {shape} is too small; use at least 8 x 8 pixels")
    if pixel_size <= 0:
        raise ValueError("pixel_size must be positive")
    if rotation_deg is None:
        rotation_deg = float(rng.uniform(0.0, 60.0))
    lattice = HoneycombLattice.from_constant(
        mat.a, pixel_size, rotation_deg, origin=tuple(rng.uniform(0, 1, size=2) * (h / 2, w / 2))
    )
    margin = 4 * imaging.probe_fwhm / pixel_size + 2
    ij = lattice.cell_indices((h, w), margin=margin)
    metal = apply_drift(lattice.metal_positions(ij), imaging.drift)
    chalc = apply_drift(lattice.metal_positions(ij) + lattice.x_offset, imaging.drift)
    hollow = apply_drift(lattice.metal_positions(ij) + lattice.hollow_offset, imaging.drift)
    in_m, in_x, in_h = (inside(p, (h, w)) for p in (metal, chalc, hollow))
    occ = populate(mat, len(ij), in_m & in_x & in_h, defects, rng, **elements)
    if displacement is not None:
        cell_metals, classes = lattice.metal_positions(ij), occ.cell_class
        ideal = (cell_metals, cell_metals + lattice.x_offset, cell_metals + lattice.hollow_offset)
        metal, chalc, hollow = (apply_drift(p + displacement(p, cell_metals, classes), imaging.drift) for p in ideal)
        in_m, in_x, in_h = (inside(p, (h, w)) for p in (metal, chalc, hollow))
    return TwinLayout((h, w), lattice, float(rotation_deg), ij, (metal, chalc, hollow), (in_m, in_x, in_h), occ)


def _tables(
    ij: np.ndarray,
    positions: tuple[np.ndarray, np.ndarray, np.ndarray],
    inside_masks: tuple[np.ndarray, np.ndarray, np.ndarray],
    occ: Occupancy,
    weights: dict[str, np.ndarray],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Site and cell tables for the sites inside the image."""
    n = len(ij)
    cell_ids = np.arange(n)
    parts = []
    for key, label, pos, mask, defect in (
        ("m", "M", positions[0], inside_masks[0], occ.m_defect),
        ("x", "X", positions[1], inside_masks[1], occ.x_defect),
        ("h", "H", positions[2], inside_masks[2], occ.h_defect),
    ):
        slots = getattr(occ, key)
        keep = mask & ((slots > 0).any(axis=1) if key == "h" else True)
        parts.append(pd.DataFrame({
            "y_px": pos[keep, 0],
            "x_px": pos[keep, 1],
            "sublattice": label,
            "species": [species_string(s) for s in slots[keep]],
            "n_atoms": (slots[keep] > 0).sum(axis=1),
            "defect": defect[keep].astype(str),
            "cell_id": cell_ids[keep],
            "cross_section_A2": weights[key][keep],
        }))
    sites = pd.concat(parts, ignore_index=True)
    sites.insert(0, "site_id", np.arange(len(sites)))

    site_of = {}
    for label in ("M", "X"):
        sub = sites[sites["sublattice"] == label]
        lookup = np.full(n, -1)
        lookup[sub["cell_id"].to_numpy()] = sub["site_id"].to_numpy()
        site_of[label] = lookup
    keep = inside_masks[0]
    centre = (positions[0] + positions[1]) / 2
    cells = pd.DataFrame({
        "cell_id": cell_ids[keep],
        "i": ij[keep, 0],
        "j": ij[keep, 1],
        "y_px": centre[keep, 0],
        "x_px": centre[keep, 1],
        "m_site_id": site_of["M"][keep],
        "x_site_id": site_of["X"][keep],
        "m_species": [species_string(s) for s in occ.m[keep]],
        "x_species": [species_string(s) for s in occ.x[keep]],
        "class": occ.cell_class[keep].astype(str),
    })
    # renumber cells 0..n-1 in both tables
    remap = np.full(n, -1)
    remap[cells["cell_id"].to_numpy()] = np.arange(len(cells))
    cells["cell_id"] = np.arange(len(cells))
    sites["cell_id"] = remap[sites["cell_id"].to_numpy()]
    return sites, cells



def with_dose(twin: DigitalTwin, dose: float, seed: int | None = None, **noise: float) -> DigitalTwin:
    """Record a noise-free twin at a dose: one clean simulation gives any number of doses.

    Parameters
    ----------
    twin : DigitalTwin
        A twin simulated with ``imaging.dose=None`` (its image is the detected fraction,
        background included), from either engine.
    dose : float
        Electron dose in e/Å^2.
    seed : int, optional
        Seed of the noise.
    **noise : float
        Replacements for the noise fields of the twin's imaging (``read_noise``,
        ``gain``, ``offset``).

    Returns
    -------
    DigitalTwin
        The same ground truth with a Poisson image at ``dose``
        (``counts = dose * pixel_area * detected_fraction``).

    Examples
    --------
    >>> clean = simulate_twin("MoS2", (64, 64), imaging=ImagingParams(dose=None), seed=0)
    >>> noisy = with_dose(clean, 1e4, seed=1)
    >>> noisy.imaging.dose, bool((noisy.sites == clean.sites).all().all())
    (10000.0, True)
    """
    if twin.imaging.dose is not None:
        raise ValueError("with_dose needs a noise-free twin (simulated with imaging.dose=None)")
    if not dose > 0:
        raise ValueError(f"dose must be positive, got {dose}")
    unknown = set(noise) - {"read_noise", "gain", "offset"}
    if unknown:
        raise ValueError(f"with_dose can only change read_noise, gain and offset, not {sorted(unknown)}")
    imaging = dataclasses.replace(twin.imaging, dose=float(dose), **noise)
    image, expected = record(twin.image.astype(np.float64), twin.pixel_size, imaging, np.random.default_rng(seed))
    return dataclasses.replace(twin, image=image, expected=expected, imaging=imaging,
                               extra={**twin.extra, "noise_seed": seed})
