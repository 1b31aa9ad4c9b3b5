"""Measuring column cross-sections and the probe's image of a column with abTEM multislice.

This is how the shipped table (``data/column_cross_sections.json``, read by
:mod:`.cross_sections`) was made; ``scripts/fit_cross_sections.py`` runs it, the tests
and ``benchmarks/bench_multislice.py`` rerun small parts of it. abTEM and ASE are
imported inside the functions (``pip install napari-stem-defects[multislice]``).

Integrated cross-section of an isolated column
----------------------------------------------
StatSTEM's "scattering cross-section" of a column is the detected intensity of the
image integrated over the column's region, in units of the incident beam times Å^2.
For an isolated column the region is the whole plane, and the integral needs no scan:
a probe is a coherent sum of the plane waves in its aperture, and integrated over all
probe positions the cross terms between plane waves vanish, so

``sigma(alpha, inner, outer) = A * mean over plane waves k in the aperture of D_k``

where ``D_k`` is the fraction of the plane wave k that the annular detector collects
after the column (the column alone in a periodic box of area A) and the mean runs
over the aperture disc of semi-angle alpha. ``D_k`` depends on the tilt |k| only (the
column is axially symmetric; checked to 0.2 % against all plane waves of the disc), so
plane waves along one axis suffice, and a disc average over tilts gives any
convergence angle from one run. Detector angles come from the same exit waves (the
fraction scattered beyond each angle, with one-pixel linear ramps at the edges so the
discrete reciprocal grid does not step). Defocus and aberrations only move phases
between the plane waves and drop out of the integral.

Thermal vibration (frozen phonons, in-plane rms ``phonon_sigma_A``) is averaged over
configurations; each configuration also moves the column by a random sub-pixel offset,
which averages the sampling error of the projected potential (about 2 %).
"""

from __future__ import annotations

import numpy as np

from .microscope import MicroscopeSettings, electron_wavelength
from .structure import column_atoms

#: Multislice protocol of the table and of the multislice twins (recorded in both).
PROTOCOL = {
    "code": "abTEM",
    "parametrization": "lobato",
    "projection": "infinite",
    "slicing": "one slice per atomic plane (each plane's potential at the start of its slice)",
}


#: Antialias cutoff (mrad) of the table's multislice runs (and the least a twin's run uses).
ANTIALIAS_CUTOFF_MRAD = 400.0
#: Coarsest potential sampling (Å) of a multislice twin. A heavy atom's projected potential on a coarser grid
#: scatters by where it sits between grid points: the W columns of a WSe2 lattice at 60 kV, shifted across the
#: grid, spread by 4 % (sd) at 0.07 Å (a cutoff just above a 200 mrad detector), 1.9 % at 0.04 Å and 0.7 % at
#: 0.03 Å (the table averages its columns over random sub-grid offsets instead).
MAX_POTENTIAL_SAMPLING_A = 0.03


def antialias_cutoff_mrad(detector_outer_mrad: float) -> float:
    """The table's antialias cutoff for a detector reaching ``detector_outer_mrad``: 400 mrad or 1.3 x it.

    Examples
    --------
    >>> antialias_cutoff_mrad(200.0), antialias_cutoff_mrad(400.0)
    (400.0, 520.0)
    """
    return max(ANTIALIAS_CUTOFF_MRAD, 1.3 * float(detector_outer_mrad))


def cutoff_sampling_A(wavelength_A: float, cutoff_mrad: float) -> float:
    """Potential sampling (Å) whose antialias cutoff (abTEM: 2/3 of the Nyquist angle) is ``cutoff_mrad``."""
    return (2.0 / 3.0) * wavelength_A / (2.0 * cutoff_mrad * 1e-3)


def potential_sampling_A(energy_kV: float, detector_outer_mrad: float) -> float:
    """Potential sampling (Å) of a multislice twin: the table's cutoff, and no coarser than
    :data:`MAX_POTENTIAL_SAMPLING_A`.

    Examples
    --------
    >>> potential_sampling_A(60.0, 200.0), round(potential_sampling_A(300.0, 200.0), 4)
    (0.03, 0.0164)
    """
    table = cutoff_sampling_A(electron_wavelength(energy_kV), antialias_cutoff_mrad(detector_outer_mrad))
    return min(table, MAX_POTENTIAL_SAMPLING_A)


def configure_abtem(threads: int = 1) -> None:
    """Eager, quiet, single-machine abTEM (numpy FFTs planned once, ``threads`` FFT threads)."""
    import abtem
    import dask

    abtem.config.set({
        "dask.lazy": False,
        "diagnostics.progress_bar": False,
        "fft": "fftw",
        "fftw.threads": int(threads),
        "fftw.planning_effort": "FFTW_ESTIMATE",
    })
    dask.config.set(scheduler="synchronous")


def nice_size(n: int, even: bool = True) -> int:
    """Smallest integer >= n with prime factors 2, 3 and 5 only (fast FFTs), even if asked.

    Examples
    --------
    >>> nice_size(589), nice_size(121), nice_size(7, even=False)
    (600, 128, 8)
    """
    n = max(int(n), 1)
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1 and (not even or n % 2 == 0):
            return n
        n += 1


def plane_slices(z: np.ndarray, vacuum: float = 2.0) -> tuple[np.ndarray, tuple[float, ...], float]:
    """Shift atom heights into a cell and cut one slice per distinct plane.

    Parameters
    ----------
    z : ndarray
        Heights of the atoms in Å (any origin).
    vacuum : float
        Vacuum below the lowest and above the highest plane.

    Returns
    -------
    z_cell : ndarray
        Heights inside the cell (bottom of the cell at 0).
    thickness : tuple of float
        Slice thicknesses: every plane starts its own slice 0.02 Å below the plane, so
        abTEM's infinite projection puts the plane's whole potential at the start of the
        slice and the wave then propagates exactly to the next plane.
    total : float
        Height of the cell.
    """
    z = np.asarray(z, dtype=float)
    planes = np.unique(np.round(z, 3)) if len(z) else np.zeros(1)
    # planes closer than 0.05 Å share a slice
    merged = [planes[0]]
    for p in planes[1:]:
        if p - merged[-1] > 0.05:
            merged.append(p)
    bottom = merged[0] - vacuum
    starts = np.array(merged) - bottom - 0.02
    total = merged[-1] - bottom + vacuum
    edges = np.concatenate([[0.0], starts, [total]])
    thickness = tuple(float(t) for t in np.diff(edges) if t > 1e-9)
    return z - bottom, thickness, float(total)


def plane_wave_cross_sections(
    content: str,
    energy_kV: float,
    theta_mrad: np.ndarray,
    *,
    tilt_max_mrad: float = 42.0,
    box_A: float = 10.0,
    cutoff_mrad: float = ANTIALIAS_CUTOFF_MRAD,
    configurations: int = 8,
    phonon_sigma_A: float = 0.07,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-section scattered beyond each angle by an isolated column, per incident tilt.

    Parameters
    ----------
    content : str
        Column content ('Mo', 'S2', 'SSe', ...); atoms at the heights of :func:`column_atoms`.
    energy_kV : float
        Beam energy.
    theta_mrad : ndarray
        Detector angles (from the optical axis).
    tilt_max_mrad : float
        Largest plane-wave tilt (at least the largest convergence angle of interest).
    box_A : float
        Side of the periodic box holding the column.
    cutoff_mrad : float
        Antialias cutoff of the simulation (sets the sampling); above ``theta_mrad.max()``.
    configurations : int
        Frozen-phonon configurations (each also shifts the column by a random sub-pixel offset).
    phonon_sigma_A : float
        In-plane rms displacement of each atom per direction (0: static lattice).
    seed : int
        Seed of the displacements.

    Returns
    -------
    tilts_mrad : ndarray of shape (n_tilts,)
    beyond : ndarray of shape (n_tilts, n_theta)
        ``box area * fraction of the incident plane wave scattered beyond theta`` in Å^2
        (up to the simulation's cutoff; the unscattered beam left out).
    """
    import abtem
    import ase
    from abtem.core.axes import OrdinalAxis

    theta = np.asarray(theta_mrad, dtype=float)
    if theta.max() >= cutoff_mrad:
        raise ValueError("cutoff_mrad must exceed the largest detector angle")
    lam = electron_wavelength(energy_kV)
    n = nice_size(int(np.ceil(box_A / cutoff_sampling_A(lam, cutoff_mrad))))
    dx = box_A / n
    n_tilts = int(np.ceil(tilt_max_mrad * 1e-3 / lam * box_A)) + 1
    kx = np.arange(n_tilts) / box_A
    x = np.arange(n) * dx
    incident = np.repeat(np.exp(2j * np.pi * kx[:, None] * x[None, :])[:, :, None], n, axis=2)
    incident = (incident / n).astype(np.complex64)
    q = np.fft.fftfreq(n, dx)
    angle = np.hypot(q[:, None], q[None, :]) * lam * 1e3
    step = lam / box_A * 1e3
    beyond_weights = np.stack([np.clip((angle - t) / step + 0.5, 0.0, 1.0) for t in theta]).astype(np.float32)

    atoms = column_atoms(content)
    out = np.zeros((n_tilts, len(theta)))
    if not atoms:
        return kx * lam * 1e3, out
    rng = np.random.default_rng(seed)
    symbols = [s for s, _ in atoms]
    z_cell, thickness, total = plane_slices(np.array([z for _, z in atoms]))
    for _ in range(max(int(configurations), 1)):
        offset = rng.uniform(0, dx, size=2)
        xy = np.array([box_A / 2, box_A / 2]) + offset + rng.normal(0, phonon_sigma_A, size=(len(atoms), 2))
        positions = np.column_stack([xy, z_cell])
        specimen = ase.Atoms(symbols, positions=positions, cell=[box_A, box_A, total], pbc=True)
        potential = abtem.Potential(specimen, gpts=(n, n), slice_thickness=thickness, projection="infinite",
                                    parametrization="lobato")
        waves = abtem.Waves(incident.copy(), energy=energy_kV * 1e3, extent=(box_A, box_A),
                            ensemble_axes_metadata=[OrdinalAxis(values=tuple(range(n_tilts)))])
        exit_waves = np.asarray(waves.multislice(potential).array)
        intensity = np.abs(np.fft.fft2(exit_waves)) ** 2 / (n * n)
        # the unscattered beam stays in its own pixel of the periodic box: an ADF detector
        # (inner angle above the convergence) never collects it, and leaving it out keeps the
        # cross-section beyond small angles smooth in the tilt
        intensity[np.arange(n_tilts), np.arange(n_tilts), 0] = 0.0
        out += np.einsum("kij,tij->kt", intensity, beyond_weights) * box_A**2
    return kx * lam * 1e3, out / max(int(configurations), 1)


def column_cross_section_multislice(content: str, settings: MicroscopeSettings, **kwargs) -> float:
    """Integrated cross-section (Å^2) of an isolated column at ``settings``, measured afresh.

    Keyword arguments go to :func:`plane_wave_cross_sections`
    (``configurations`` defaults to 8 when the settings ask for no frozen phonons).
    """
    kwargs.setdefault("tilt_max_mrad", settings.convergence_mrad + 1.0)
    kwargs.setdefault("cutoff_mrad", antialias_cutoff_mrad(settings.detector_outer_mrad))
    if settings.frozen_phonons:
        kwargs.setdefault("configurations", settings.frozen_phonons)
        kwargs.setdefault("phonon_sigma_A", settings.phonon_sigma_A)
    from .cross_sections import aperture_mean

    tilts, beyond = plane_wave_cross_sections(content, settings.energy_kV,
                                              np.array(settings.detector_mrad), **kwargs)
    if settings.convergence_mrad > tilts.max() + 1e-9:
        raise ValueError(f"convergence {settings.convergence_mrad} mrad exceeds the sampled tilts")
    avg = aperture_mean(tilts, beyond, settings.convergence_mrad)
    return float(avg[0] - avg[1])


def column_image_profile(
    content: str,
    settings: MicroscopeSettings,
    radii_A: np.ndarray,
    *,
    box_A: float = 16.0,
    cutoff_mrad: float | None = None,
) -> np.ndarray:
    """HAADF image of an isolated column along a line through it (detected fraction per probe position).

    A plain multislice line scan (abTEM ``Probe`` with the settings' aperture, defocus and
    Cs, ``LineScan``, ``AnnularDetector``) over positions at ``radii_A`` from the column,
    which sits in the middle of a periodic box of side ``box_A``. The source size is not
    applied (a Gaussian blur of the image, added separately).
    """
    import abtem
    import ase

    cutoff = cutoff_mrad or max(1.15 * settings.detector_outer_mrad, 250.0)
    lam = settings.wavelength_A
    n = nice_size(int(np.ceil(box_A / cutoff_sampling_A(lam, cutoff))))
    atoms = column_atoms(content)
    z_cell, thickness, total = plane_slices(np.array([z for _, z in atoms]))
    centre = box_A / 2
    positions = np.column_stack([np.full(len(atoms), centre), np.full(len(atoms), centre), z_cell])
    specimen = ase.Atoms([s for s, _ in atoms], positions=positions, cell=[box_A, box_A, total], pbc=True)
    potential = abtem.Potential(specimen, gpts=(n, n), slice_thickness=thickness, projection="infinite")
    probe = abtem.Probe(energy=settings.energy_kV * 1e3, semiangle_cutoff=settings.convergence_mrad,
                        defocus=settings.defocus_A, Cs=settings.Cs_A)
    detector = abtem.AnnularDetector(inner=settings.detector_inner_mrad, outer=settings.detector_outer_mrad)
    radii = np.asarray(radii_A, dtype=float)
    scan = abtem.CustomScan(np.column_stack([centre + radii, np.full(len(radii), centre)]))
    measurement = probe.scan(potential, scan=scan, detectors=detector)
    return np.asarray(measurement.array, dtype=float).ravel()
