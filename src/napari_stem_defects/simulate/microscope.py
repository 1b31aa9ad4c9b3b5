"""Microscope settings of a HAADF-STEM experiment: beam energy, probe, detector, coherence.

One small frozen dataclass shared by the multislice engine (:mod:`.multislice`), the
calibrated cross-section table (:mod:`.cross_sections`) and the fast twins
(:class:`~napari_stem_defects.simulate.imaging.ImagingParams` carries one).
Pure python, no abTEM.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

#: Beam energies the plugin (and its cross-section table) covers, in kV.
ENERGY_RANGE_KV: tuple[float, float] = (60.0, 300.0)
#: Probe convergence semi-angles the table covers, in mrad.
CONVERGENCE_RANGE_MRAD: tuple[float, float] = (10.0, 40.0)
#: Largest detector angle the table covers, in mrad.
MAX_DETECTOR_MRAD: float = 300.0


def electron_wavelength(energy_kV: float) -> float:
    """Relativistic electron wavelength in Å.

    Examples
    --------
    >>> round(electron_wavelength(80.0), 5), round(electron_wavelength(300.0), 5)
    (0.04176, 0.01969)
    """
    volts = energy_kV * 1e3
    # h / sqrt(2 m e V (1 + e V / (2 m c^2))), in Å
    return 12.2642584 / math.sqrt(volts * (1.0 + 0.97846914e-6 * volts))


@dataclass(frozen=True)
class MicroscopeSettings:
    """How the microscope was set up for a HAADF image.

    Parameters
    ----------
    energy_kV : float
        Beam energy, 60-300 kV.
    convergence_mrad : float
        Probe convergence semi-angle (aperture), 10-40 mrad.
    detector_inner_mrad, detector_outer_mrad : float
        Collection angles of the annular detector; the inner angle must exceed the
        convergence angle (dark field), the outer is at most 300 mrad.
    source_size_A : float
        Full width at half maximum of the (Gaussian) demagnified source at the specimen:
        partial spatial coherence, which blurs the image by that Gaussian.
    defocus_A : float
        Probe defocus (positive underfocus, as abTEM's ``defocus``).
    Cs_A : float
        Third-order spherical aberration in Å (1 µm = 1e4 Å; 0 for a corrected probe).
    frozen_phonons : int
        0 for a static lattice; N > 0 averages N frozen-phonon configurations.
    phonon_sigma_A : float
        Root-mean-square in-plane thermal displacement per direction (Debye-Waller),
        used when ``frozen_phonons > 0``.

    Examples
    --------
    >>> s = MicroscopeSettings(energy_kV=60, convergence_mrad=30, detector_inner_mrad=50)
    >>> round(s.wavelength_A, 4)
    0.0487
    >>> MicroscopeSettings(detector_inner_mrad=20)
    Traceback (most recent call last):
    ...
    ValueError: detector inner angle 20 mrad must exceed the convergence angle 30 mrad (an annular dark-field detector)
    """

    energy_kV: float = 80.0
    convergence_mrad: float = 30.0
    detector_inner_mrad: float = 70.0
    detector_outer_mrad: float = 200.0
    source_size_A: float = 0.0
    defocus_A: float = 0.0
    Cs_A: float = 0.0
    frozen_phonons: int = 0
    phonon_sigma_A: float = 0.07

    def __post_init__(self) -> None:
        lo, hi = ENERGY_RANGE_KV
        if not lo <= self.energy_kV <= hi:
            raise ValueError(f"beam energy {self.energy_kV:g} kV is outside {lo:g}-{hi:g} kV")
        lo, hi = CONVERGENCE_RANGE_MRAD
        if not lo <= self.convergence_mrad <= hi:
            raise ValueError(f"convergence angle {self.convergence_mrad:g} mrad is outside {lo:g}-{hi:g} mrad")
        if self.detector_inner_mrad <= self.convergence_mrad:
            raise ValueError(
                f"detector inner angle {self.detector_inner_mrad:g} mrad must exceed the convergence angle "
                f"{self.convergence_mrad:g} mrad (an annular dark-field detector)"
            )
        if not self.detector_inner_mrad < self.detector_outer_mrad <= MAX_DETECTOR_MRAD:
            raise ValueError(
                f"detector outer angle {self.detector_outer_mrad:g} mrad must lie between the inner angle "
                f"{self.detector_inner_mrad:g} and {MAX_DETECTOR_MRAD:g} mrad"
            )
        if self.source_size_A < 0 or self.phonon_sigma_A < 0:
            raise ValueError("source size and phonon displacement must be >= 0")
        if int(self.frozen_phonons) != self.frozen_phonons or self.frozen_phonons < 0:
            raise ValueError(f"frozen_phonons must be 0 or a positive integer, got {self.frozen_phonons!r}")

    @property
    def wavelength_A(self) -> float:
        """Relativistic electron wavelength in Å."""
        return electron_wavelength(self.energy_kV)

    @property
    def detector_mrad(self) -> tuple[float, float]:
        """(inner, outer) collection angles in mrad."""
        return (self.detector_inner_mrad, self.detector_outer_mrad)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON metadata); :meth:`from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MicroscopeSettings:
        """Settings from :meth:`as_dict` output (unknown keys are refused with a message)."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown microscope settings {sorted(unknown)}")
        return cls(**data)

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``80 kV, 30 mrad, HAADF 70-200 mrad``."""
        text = (f"{self.energy_kV:g} kV, {self.convergence_mrad:g} mrad, "
                f"ADF {self.detector_inner_mrad:g}-{self.detector_outer_mrad:g} mrad")
        if self.source_size_A:
            text += f", source {self.source_size_A:g} Å"
        if self.frozen_phonons:
            text += f", {self.frozen_phonons} frozen phonons ({self.phonon_sigma_A:g} Å)"
        return text


def typed_settings(kv: float | None, convergence_mrad: float = 30.0,
                   detector_mrad: tuple[float, float] = (70.0, 200.0)) -> MicroscopeSettings | None:
    """The settings a user types (``--kv``, ``--convergence``, ``--detector``): a real, vibrating lattice
    (the thermal table); None without a beam energy.

    Examples
    --------
    >>> typed_settings(60, 28, (50, 200)).describe()
    '60 kV, 28 mrad, ADF 50-200 mrad, 8 frozen phonons (0.07 Å)'
    >>> typed_settings(None) is None
    True
    """
    if kv is None:
        return None
    return MicroscopeSettings(energy_kV=float(kv), convergence_mrad=float(convergence_mrad),
                              detector_inner_mrad=float(detector_mrad[0]), detector_outer_mrad=float(detector_mrad[1]),
                              frozen_phonons=8)


def settings_from_metadata(metadata: dict[str, Any]) -> MicroscopeSettings | None:
    """The microscope settings a file records, when it gives both the beam energy and the detector angles.

    Reads ``beam_energy_keV`` and ``collection_angles_mrad`` (inner, outer) of a
    :class:`~napari_stem_defects.io.stem_image.StemImage`'s metadata, and the convergence
    semi-angle when present (``convergence_angle_mrad``, the key an image layer's calibration uses,
    or ``convergence_mrad``; default 30 mrad); a real specimen vibrates, so the thermal table is used.
    Without the detector angles (most files) the settings are not guessed: the detector decides
    whether an Se2 column looks brighter or dimmer than W.

    Examples
    --------
    >>> settings_from_metadata({"beam_energy_keV": 60.0, "collection_angles_mrad": (50.0, 200.0)}).describe()
    '60 kV, 30 mrad, ADF 50-200 mrad, 8 frozen phonons (0.07 Å)'
    >>> settings_from_metadata({"beam_energy_keV": 60.0, "collection_angles_mrad": (50.0, 200.0),
    ...                         "convergence_angle_mrad": 25.0}).convergence_mrad
    25.0
    >>> settings_from_metadata({"beam_energy_keV": 60.0}) is None
    True
    """
    energy, angles = metadata.get("beam_energy_keV"), metadata.get("collection_angles_mrad")
    if energy is None or angles is None or len(angles) != 2:
        return None
    try:
        convergence = metadata.get("convergence_angle_mrad") or metadata.get("convergence_mrad") or 30.0
        return MicroscopeSettings(energy_kV=float(energy), convergence_mrad=float(convergence),
                                  detector_inner_mrad=float(angles[0]), detector_outer_mrad=float(angles[1]),
                                  frozen_phonons=8)
    except (TypeError, ValueError):
        return None  # outside the table (e.g. a 30 kV SEM-STEM): Z^1.7 as before
