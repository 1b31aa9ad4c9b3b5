"""Multislice digital twins: abTEM (PRISM) images with the fast twins' exact ground truth.

A multislice twin is drawn by the same code as a fast twin (:func:`~.twin.twin_layout`:
lattice, rotation, origin, cells, :func:`~.defects.populate`), so a multislice twin
and a fast twin of the same seed and arguments hold the same atoms and have identical
``sites`` and ``cells`` tables. Only the image differs: here it is computed by abTEM
from the atoms in three dimensions.

How the image is made
---------------------
1. **Specimen**: every cell of the twin is placed in an orthogonal periodic supercell
   of the unrotated lattice (:class:`~.structure.Supercell`) that covers the field of
   view plus the probe margin; cells of the supercell outside it hold the perfect host.
   Atoms get their heights from :mod:`.structure` (metal plane, chalcogens above and
   below, adatoms on top), vacuum above and below.
2. **Multislice**: abTEM PRISM with the Lobato potential, infinite projection, one
   slice per atomic plane, sampled at least as finely as the cross-section table
   (antialias cutoff 400 mrad or 1.3 x the detector's outer angle) and no coarser than
   0.03 Å (:func:`~.column_calibration.potential_sampling_A`: on a coarser grid a heavy
   column's intensity depends on where it sits between grid points), an interpolation
   factor that keeps the probe window at least ``max(10 Å, 8 lambda / alpha)`` wide, the
   settings' defocus and Cs, an annular detector, scanned over the whole supercell at
   Nyquist sampling. Frozen phonons (``frozen_phonons = N``) average N configurations
   with in-plane Gaussian displacements of rms ``phonon_sigma_A``.
3. **Image**: the periodic, band-limited result is blurred by the source (Gaussian of
   FWHM ``source_size_A``), Fourier-interpolated and sampled at every pixel of the
   requested image (rotation, drift and scan-line jitter as the fast twins have them),
   giving the detected fraction of the incident beam per pixel.
4. **Recording**: the fast twins' support background (:func:`~.imaging._background`)
   is added and the dose noise is the fast twins' own (:func:`~.imaging.record`), so
   :func:`~.twin.with_dose` turns one clean multislice twin into any number of doses.

abTEM and ASE are imported inside the functions (``pip install napari-stem-defects[multislice]``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..materials import Material, parse_material
from .column_calibration import (
    PROTOCOL,
    configure_abtem,
    nice_size,
    plane_slices,
    potential_sampling_A,
)
from .defects import populate
from .imaging import ImagingParams, _background, column_cross_section, record
from .imaging_conditions import calibrated_imaging
from .microscope import MicroscopeSettings
from .structure import Supercell, site_atoms, unit_positions
from .twin import DigitalTwin, TwinLayout, _tables, twin_layout

#: Noise and scan fields of ImagingParams that a multislice twin takes from the caller.
RECORDING_FIELDS = ("background", "background_variation", "background_length", "texture", "texture_length",
                    "dose", "read_noise", "gain", "offset", "line_jitter", "drift")


def require_abtem() -> None:
    """Raise a clear message when the optional multislice dependencies are missing."""
    try:
        import abtem  # noqa: F401
        import ase  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "multislice twins need abTEM: pip install 'napari-stem-defects[multislice]'"
        ) from err


def simulate_multislice_twin(
    material: str | Material = "MoS2",
    shape: tuple[int, int] = (256, 256),
    pixel_size: float = 0.12,
    *,
    rotation_deg: float | None = 0.0,
    defects: Mapping[str, float] | None = None,
    microscope: MicroscopeSettings | None = None,
    imaging: ImagingParams | None = None,
    seed: int | None = None,
    dopant: str | None = None,
    substituent: str | None = None,
    adatom: str | None = None,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> DigitalTwin:
    """Simulate a HAADF-STEM image of a 2H-MX2 monolayer by multislice, with exact labels.

    Parameters
    ----------
    material, shape, pixel_size, rotation_deg, defects, seed, dopant, substituent, adatom
        As :func:`~.twin.simulate_twin`; the same values and seed give the same atoms
        and tables as the fast twin.
    microscope : MicroscopeSettings, optional
        Beam energy, convergence, detector, source size, aberrations, frozen phonons;
        default ``imaging.microscope``.
    imaging : ImagingParams, optional
        Dose, background, read noise, gain, offset, line jitter and drift are taken
        from it (``dose=None`` gives the clean detected fraction). Its probe fields only
        set the margin of cells drawn around the image (as for the fast twin); the
        probe itself is abTEM's. The twin's ``imaging`` records the fast-twin
        equivalent (:func:`~.imaging_conditions.calibrated_imaging` at the settings).
    threads : int
        FFT threads for abTEM.
    progress : callable, optional
        Called with a short status line at each stage.

    Returns
    -------
    DigitalTwin
        ``extra`` has ``engine='multislice'`` and the simulation's details
        (``extra['multislice']``: supercell, sampling, slices, PRISM interpolation,
        scan, abTEM version, seconds).
    """
    require_abtem()
    mat = parse_material(material)
    given = imaging or ImagingParams()
    microscope = microscope or given.microscope
    say = progress or (lambda _msg: None)
    rng = np.random.default_rng(seed)
    layout = twin_layout(mat, shape, pixel_size, rotation_deg, defects, given, rng,
                         dopant=dopant, substituent=substituent, adatom=adatom)
    recorded = calibrated_imaging(microscope, **{k: getattr(given, k) for k in RECORDING_FIELDS})

    t0 = time.perf_counter()
    supercell, symbols, xyz = specimen(layout, mat, np.random.default_rng(rng.integers(2**62)), pixel_size)
    say(f"specimen: {len(symbols)} atoms in a {supercell.extent[1]:.1f} x {supercell.extent[0]:.1f} Å supercell")
    periodic, info = periodic_image(symbols, xyz, supercell, microscope, threads=threads,
                                    seed=int(rng.integers(2**31)), progress=say)
    fraction = sample_image(periodic, supercell, layout, pixel_size, microscope.source_size_A,
                            given.line_jitter, given.drift, rng)
    fraction += _background(layout.shape, pixel_size, recorded, rng)
    image, expected = record(fraction, pixel_size, recorded, rng)
    info["seconds"] = round(time.perf_counter() - t0, 1)
    say(f"multislice image in {info['seconds']:.0f} s")

    weights = {key: column_cross_section(getattr(layout.occupancy, key), recorded) for key in ("m", "x", "h")}
    sites, cells = _tables(layout.ij, layout.positions, layout.inside, layout.occupancy, weights)
    return DigitalTwin(
        image=image, expected=expected, sites=sites, cells=cells, pixel_size=float(pixel_size), material=mat,
        lattice=layout.lattice, imaging=recorded, seed=seed,
        extra={"rotation_deg": layout.rotation_deg, "engine": "multislice", "multislice": info},
    )


def specimen(
    layout: TwinLayout, mat: Material, fill_rng: np.random.Generator, pixel_size: float, margin_A: float = 2.5
) -> tuple[Supercell, list[str], np.ndarray]:
    """Atoms of a twin in an orthogonal periodic supercell.

    The supercell covers every cell with a site in the field of view or within
    ``margin_A`` of it; cells of the twin further out (the fast twin's probe margin)
    are kept where they do not fall on the same supercell cell as a nearer one, and
    the remaining supercell cells get the perfect host.

    Returns
    -------
    supercell : Supercell
    symbols : list of str
        Element of every atom.
    xyz : ndarray of shape (n, 3)
        Positions in Å inside the supercell (ASE's axes: x along the image's columns,
        y along its rows, z along the beam).
    """
    a = mat.a
    h, w = layout.shape
    # distance (Å) of each cell's nearest site from the image rectangle
    distance = np.full(len(layout.ij), np.inf)
    for pos in layout.positions:
        dy = np.maximum(np.maximum(-0.5 - pos[:, 0], pos[:, 0] - (h - 0.5)), 0.0)
        dx = np.maximum(np.maximum(-0.5 - pos[:, 1], pos[:, 1] - (w - 0.5)), 0.0)
        distance = np.minimum(distance, np.hypot(dy, dx) * pixel_size)
    sites = unit_positions(a, layout.ij)
    near = distance <= margin_A
    every = np.concatenate([sites[k][near] for k in ("m", "x", "h")])
    span = every.max(axis=0) - every.min(axis=0)
    supercell = Supercell.covering(a, (float(span[0]), float(span[1])), margin=0.25 * a)
    keys = supercell.key(layout.ij)
    order = np.argsort(distance, kind="stable")
    _, first = np.unique(keys[order], return_index=True)
    placed = np.zeros(len(keys), dtype=bool)
    placed[order[first]] = True
    if not placed[near].all():  # cannot happen: the supercell covers the near cells' span
        raise RuntimeError("supercell too small for the cells in the field of view")
    missing = np.setdiff1d(np.arange(supercell.n_cells), keys[placed])
    fill_ij = supercell.cells()[missing]
    fill = populate(mat, len(fill_ij), np.zeros(len(fill_ij), dtype=bool), None, fill_rng)
    fill_sites = unit_positions(a, fill_ij)
    symbols: list[str] = []
    rows: list[tuple[float, float, float]] = []
    occ = layout.occupancy
    for positions, occupancy, keep in ((sites, occ, placed), (fill_sites, fill, np.ones(len(fill_ij), bool))):
        for kind in ("m", "x", "h"):
            slots = getattr(occupancy, kind)[keep]
            for (dy, dx), pair in zip(supercell.wrap(positions[kind][keep]), slots):
                for element, z in site_atoms(pair, kind):
                    symbols.append(element)
                    rows.append((dx, dy, z))
    return supercell, symbols, np.array(rows, dtype=float).reshape(-1, 3)


def prism_plan(supercell: Supercell, microscope: MicroscopeSettings) -> dict[str, Any]:
    """Sampling, PRISM interpolation and scan grid for a supercell (x first, as abTEM)."""
    lam = microscope.wavelength_A
    alpha = microscope.convergence_mrad * 1e-3
    height, width = supercell.extent
    extent = (width, height)
    dx_max = potential_sampling_A(microscope.energy_kV, microscope.detector_outer_mrad)
    window = max(10.0, 8.0 * lam / alpha)
    interpolation = tuple(max(1, int(np.floor(e / window))) for e in extent)
    gpts = tuple(f * nice_size(int(np.ceil(e / dx_max / f)), even=False) for e, f in zip(extent, interpolation))
    nyquist = lam / (4.0 * alpha)
    scan = tuple(int(np.ceil(e / (0.9 * nyquist))) | 1 for e in extent)  # odd: no Nyquist bin to split
    return {"extent_A": extent, "gpts": gpts, "interpolation": interpolation, "scan_gpts": scan,
            "window_A": [e / f for e, f in zip(extent, interpolation)]}


def periodic_image(
    symbols: list[str],
    xyz: np.ndarray,
    supercell: Supercell,
    microscope: MicroscopeSettings,
    *,
    threads: int = 1,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """HAADF image of a periodic specimen by abTEM PRISM, over one period at Nyquist sampling.

    Returns
    -------
    image : ndarray, shape (scan rows (y), scan columns (x))
        Detected fraction of the incident beam at probe positions ``(k * height / rows,
        l * width / columns)``, frozen-phonon average when asked.
    info : dict
        What was run (JSON-friendly).
    """
    import abtem
    import ase

    configure_abtem(threads)
    say = progress or (lambda _msg: None)
    plan = prism_plan(supercell, microscope)
    extent = plan["extent_A"]
    z_cell, thickness, total = plane_slices(xyz[:, 2])
    configs = max(int(microscope.frozen_phonons), 1)
    sigma = microscope.phonon_sigma_A if microscope.frozen_phonons else 0.0
    rng = np.random.default_rng(seed)
    energy = microscope.energy_kV * 1e3
    ctf = abtem.CTF(semiangle_cutoff=microscope.convergence_mrad, energy=energy,
                    aberration_coefficients={"C10": -microscope.defocus_A, "C30": microscope.Cs_A})
    detector = abtem.AnnularDetector(inner=microscope.detector_inner_mrad, outer=microscope.detector_outer_mrad)
    scan = abtem.GridScan(start=(0.0, 0.0), end=extent, gpts=plan["scan_gpts"], endpoint=False)
    total_image = None
    for k in range(configs):
        positions = np.column_stack([xyz[:, :2] + rng.normal(0.0, sigma, size=(len(xyz), 2)) if sigma else xyz[:, :2],
                                     z_cell])
        atoms = ase.Atoms(symbols, positions=positions, cell=[extent[0], extent[1], total], pbc=True)
        atoms.wrap()
        potential = abtem.Potential(atoms, gpts=plan["gpts"], slice_thickness=thickness, projection="infinite",
                                    parametrization="lobato").build(lazy=False)
        s_matrix = abtem.SMatrix(potential=potential, energy=energy, semiangle_cutoff=microscope.convergence_mrad,
                                 interpolation=plan["interpolation"])
        t0 = time.perf_counter()
        measurement = s_matrix.scan(scan=scan, detectors=detector, ctf=ctf)
        image = np.asarray(measurement.array, dtype=np.float64).T  # abTEM is (x, y)
        total_image = image if total_image is None else total_image + image
        say(f"configuration {k + 1}/{configs}: {len(s_matrix)} plane waves, {time.perf_counter() - t0:.0f} s")
    info = {
        "abtem_version": abtem.__version__,
        **{k: v for k, v in PROTOCOL.items() if k not in ("box_A", "cutoff_mrad")},
        "supercell_A": [round(v, 4) for v in supercell.extent],
        "supercell_cells": supercell.n_cells,
        "atoms": len(symbols),
        "potential_gpts": list(plan["gpts"][::-1]),
        "potential_sampling_A": [round(e / g, 5) for e, g in zip(extent[::-1], plan["gpts"][::-1])],
        "slice_thickness_A": [round(t, 4) for t in thickness],
        "prism_interpolation": list(plan["interpolation"][::-1]),
        "prism_window_A": [round(w, 2) for w in plan["window_A"][::-1]],
        "scan_gpts": list(plan["scan_gpts"][::-1]),
        "frozen_phonon_configurations": int(microscope.frozen_phonons),
        "microscope": microscope.as_dict(),
        "axes": "(y, x)",
    }
    return total_image / configs, info


def fourier_upsample(image: np.ndarray, shape: tuple[int, int], spacing_A: tuple[float, float] = (1.0, 1.0),
                     blur_sigma_A: float = 0.0) -> np.ndarray:
    """Band-limited periodic interpolation of an odd-sized periodic image onto a finer grid.

    ``spacing_A`` is the input's pixel size (y, x); ``blur_sigma_A`` multiplies the
    spectrum by a Gaussian of that standard deviation first (the source size).
    """
    ny, nx = image.shape
    if ny % 2 == 0 or nx % 2 == 0:
        raise ValueError("fourier_upsample needs odd sizes (no Nyquist frequency)")
    spec = np.fft.fft2(image)
    if blur_sigma_A > 0:
        ky = np.fft.fftfreq(ny, d=spacing_A[0])[:, None]
        kx = np.fft.fftfreq(nx, d=spacing_A[1])[None, :]
        spec *= np.exp(-2 * np.pi**2 * blur_sigma_A**2 * (ky**2 + kx**2))
    big = np.zeros(shape, dtype=complex)
    # frequency 0 sits at n // 2 after fftshift, and must land at N // 2 before ifftshift
    cy, cx = shape[0] // 2 - ny // 2, shape[1] // 2 - nx // 2
    big[cy : cy + ny, cx : cx + nx] = np.fft.fftshift(spec)
    out = np.fft.ifft2(np.fft.ifftshift(big)).real
    return out * (shape[0] * shape[1]) / (ny * nx)


def sample_image(
    periodic: np.ndarray,
    supercell: Supercell,
    layout: TwinLayout,
    pixel_size: float,
    source_size_A: float,
    line_jitter: float,
    drift: tuple[float, float],
    rng: np.random.Generator,
    fine_A: float = 0.04,
) -> np.ndarray:
    """Sample the periodic multislice image at every pixel of the twin's image.

    Pixel (row, col) sees the specimen where the twin's lattice puts it: scan-line
    jitter and drift undone, then the lattice's rotation and origin. The source size
    blurs the image by a Gaussian of that FWHM.
    """
    from scipy.ndimage import map_coordinates

    height, width = supercell.extent
    ny, nx = periodic.shape
    fy, fx = (nice_size(int(np.ceil(e / fine_A))) for e in (height, width))
    fine = fourier_upsample(periodic, (fy, fx), (height / ny, width / nx), source_size_A / 2.3548200450309493)
    h, w = layout.shape
    rows, cols = np.meshgrid(np.arange(h, dtype=float), np.arange(w, dtype=float), indexing="ij")
    if line_jitter > 0:
        cols = cols - rng.normal(0.0, line_jitter, size=h)[:, None]
    y_u = rows / (1.0 + drift[0])
    x_u = cols - drift[1] * y_u
    lattice = layout.lattice
    # pixels -> lattice coordinates (i, j) -> specimen (dy, dx) in Å of the unrotated lattice
    specimen_basis = supercell.a * np.array([[0.0, -np.sin(np.pi / 3)], [1.0, np.cos(np.pi / 3)]])
    to_specimen = specimen_basis @ np.linalg.inv(lattice.basis)
    rel = np.stack([(y_u - lattice.origin[0]).ravel(), (x_u - lattice.origin[1]).ravel()])
    spec = to_specimen @ rel
    gy = np.mod(spec[0], height) / height * fy
    gx = np.mod(spec[1], width) / width * fx
    values = map_coordinates(fine, [gy, gx], order=3, mode="grid-wrap")
    return values.reshape(h, w)
