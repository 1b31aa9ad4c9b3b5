"""Imaging conditions of digital twins: drawn widely for training, or calibrated to a microscope setting.

:func:`random_imaging` draws :class:`~.imaging.ImagingParams` the networks
are trained on (a random microscope setting, probe, dose, background, ...);
:func:`calibrated_imaging` takes the probe and the column cross-sections of
one setting from the table calibrated to multislice (:mod:`.cross_sections`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .imaging import ImagingParams
from .microscope import MicroscopeSettings


def random_imaging(
    rng: np.random.Generator,
    dose_range: tuple[float, float] = (1e3, 1e7),
    column_model: str = "zpower",
) -> ImagingParams:
    """Draw imaging conditions widely, for training models that must meet real data.

    With ``column_model="table"`` draws a microscope setting (60-300 kV,
    convergence 15-35 mrad, detector inner 1.3-3.5 times the convergence within
    30-110 mrad, outer 140-300 mrad, source size 0.2-0.8 Å, thermal vibration in three
    draws out of four), takes the column cross-sections and the probe from the
    multislice-calibrated table at that setting and randomises around them: each
    content's cross-section by a few % (sd 3 %, within +-10 %), all of them together
    by 0.5-2 (detector efficiency), the probe core by 0.9-1.15 and its tail by +-30 %.
    With ``"zpower"`` (default: what the shipped models were trained on, until they are
    retrained on the table) the columns follow ``sum Z**gamma`` with gamma 1.4-2.0 and the
    probe is drawn freely.
    Both randomise the probe shape, background level, gradient and texture, dose
    (log-uniform), detector noise, gain, line jitter and drift.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    dose_range : tuple of float
        Range of the log-uniform dose in e/Å^2.
    column_model : {'table', 'zpower'}
        Where column cross-sections come from.

    Returns
    -------
    ImagingParams
    """
    if column_model not in ("table", "zpower"):
        raise ValueError(f"column_model must be 'table' or 'zpower', not {column_model!r}")
    lo, hi = np.log10(dose_range[0]), np.log10(dose_range[1])
    if column_model == "zpower":
        probe = dict(
            gamma=float(rng.uniform(1.4, 2.0)),
            cross_section=float(3.5e-5 * rng.uniform(0.5, 2.0)),
            probe_fwhm=float(rng.uniform(0.7, 1.5)),
            probe_ellipticity=float(rng.uniform(0.0, 0.25)),
            probe_angle_deg=float(rng.uniform(0, 180)),
            tail_fraction=float(rng.uniform(0.0, 0.35)),
            tail_width=float(rng.uniform(0.8, 4.0)),
        )
    else:
        probe = _random_calibrated_probe(rng)
    return ImagingParams(
        **probe,
        background=float(10 ** rng.uniform(-3.5, -1.8)),
        background_variation=float(rng.uniform(0.0, 0.5)),
        background_length=float(rng.uniform(8.0, 60.0)),
        texture=float(10 ** rng.uniform(-4.5, -2.8)),
        texture_length=float(rng.uniform(0.4, 2.0)),
        dose=float(10 ** rng.uniform(lo, hi)),
        read_noise=float(rng.uniform(0.0, 2.0)),
        gain=float(10 ** rng.uniform(-1, 2)),
        offset=float(rng.uniform(0, 100)),
        line_jitter=float(rng.uniform(0.0, 0.4)),
        drift=(float(rng.normal(0, 0.01)), float(rng.normal(0, 0.01))),
    )


def random_microscope(rng: np.random.Generator) -> MicroscopeSettings:
    """A microscope setting drawn widely: 60-300 kV (half of the draws at the common 60, 80, 120, 200,
    300 kV), convergence 15-35 mrad, ADF detector inner 1.3-3.5 times the convergence (30-110
    mrad), outer 140-300 mrad, source size 0.2-0.8 Å, thermal vibration in three draws out of four."""
    if rng.uniform() < 0.5:
        kv = float(rng.choice([60.0, 80.0, 120.0, 200.0, 300.0]))
    else:
        kv = float(rng.uniform(60.0, 300.0))
    alpha = float(rng.uniform(15.0, 35.0))
    inner = float(np.clip(alpha * rng.uniform(1.3, 3.5), 30.0, 110.0))
    outer = float(rng.uniform(max(140.0, inner + 60.0), 300.0))
    thermal = rng.uniform() < 0.75
    return MicroscopeSettings(
        energy_kV=kv, convergence_mrad=alpha, detector_inner_mrad=inner, detector_outer_mrad=outer,
        source_size_A=float(rng.uniform(0.2, 0.8)), frozen_phonons=8 if thermal else 0,
    )


def _random_calibrated_probe(rng: np.random.Generator) -> dict[str, Any]:
    from .cross_sections import canonical_content, load_table, probe_shape

    microscope = random_microscope(rng)
    shape = probe_shape(microscope)
    # one factor per content; a mixed pair's two orders share theirs (content_cross_section)
    contents = [c for c in load_table().contents if c == canonical_content(c)]
    factors = np.clip(rng.normal(1.0, 0.03, size=len(contents)), 0.9, 1.1)
    return dict(
        gamma=None,
        microscope=microscope,
        cross_section_scale=float(rng.uniform(0.5, 2.0)),
        content_factors=tuple((c, float(f)) for c, f in zip(contents, factors)),
        probe_fwhm=float(shape.fwhm_A * rng.uniform(0.9, 1.15)),
        probe_ellipticity=float(rng.uniform(0.0, 0.25)),
        probe_angle_deg=float(rng.uniform(0, 180)),
        tail_fraction=float(np.clip(shape.tail_fraction * rng.uniform(0.7, 1.3), 0.0, 0.6)),
        tail_width=float(shape.tail_width_A * rng.uniform(0.8, 1.25)),
    )


def calibrated_imaging(microscope: MicroscopeSettings | None = None, **overrides: Any) -> ImagingParams:
    """Imaging whose columns and probe both come from the multislice-calibrated table.

    Parameters
    ----------
    microscope : MicroscopeSettings, optional
        The setting (default :class:`MicroscopeSettings`).
    **overrides
        Other :class:`ImagingParams` fields (dose, background, ...); probe fields given
        here win over the table's.

    Returns
    -------
    ImagingParams
        ``gamma=None`` (table cross-sections), probe core FWHM (source size included),
        tail fraction and width from :func:`~.cross_sections.probe_shape`.

    Examples
    --------
    >>> im = calibrated_imaging(MicroscopeSettings(energy_kV=60, detector_inner_mrad=50), dose=1e5)
    >>> im.column_model, 0.5 < im.probe_fwhm < 1.2
    ('table', True)
    """
    from .cross_sections import probe_shape

    microscope = microscope or MicroscopeSettings()
    shape = probe_shape(microscope)
    fields = dict(gamma=None, microscope=microscope, probe_fwhm=shape.fwhm_A,
                  tail_fraction=shape.tail_fraction, tail_width=shape.tail_width_A)
    fields.update(overrides)
    return ImagingParams(**fields)


__all__ = ["calibrated_imaging", "random_imaging", "random_microscope"]
