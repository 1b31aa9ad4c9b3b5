"""What column detection returns: the site table, the detection map and the fits behind the labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: Columns of :attr:`ColumnResult.sites`, in order.
SITE_COLUMNS = (
    "site_id", "y_px", "x_px", "sublattice", "species", "probability", "intensity",
    "detected", "refined_by", "i", "j", "verified",
)
#: Columns of the site table that say where a site sits in a real specimen (after :data:`SITE_COLUMNS`;
#: tables made before they existed, or by hand, mean domain 0, phase '2H', boundary False).
SITE_STRUCTURE_COLUMNS = ("domain", "phase", "boundary")
#: Columns written to ``sites.csv`` by ``napari-stem-defects analyze`` (a stable contract).
SITES_CSV_COLUMNS = ("site_id", "y_px", "x_px", "sublattice", "species", "intensity", "probability",
                     "detected", "refined_by", "i", "j")

#: The species label of a site whose column is missing.
EMPTY = "empty"


class ColumnDetectionError(ValueError):
    """The image cannot be analysed (wrong shape, NaN, constant, too small, no lattice)."""


@dataclass
class SpeciesFit:
    """A mixture fitted to one sublattice's column intensities.

    Attributes
    ----------
    sublattice : str
        'M' or 'X'.
    labels : list of str
        Species of each component, darkest first (e.g. ['empty', 'S', 'S2']); a species may have
        several components (the two orders of a mixed chalcogen pair).
    means, sigmas, weights : ndarray of shape (K,)
        Mean, standard deviation and mixing weight of each Gaussian component.
    intensities : ndarray of shape (N,)
        The intensities that were fitted (one per site on this sublattice).
    gamma : float
        Z exponent that explained the intensities best (nan for a free mixture).
    site_means : ndarray of shape (N, K), optional
        Per-site component means (a physics fit adds each site's crosstalk
        from its neighbours); None when the means are the same for all sites.
    """

    sublattice: str
    labels: list[str]
    means: np.ndarray
    sigmas: np.ndarray
    weights: np.ndarray
    intensities: np.ndarray
    gamma: float = float("nan")
    site_means: np.ndarray | None = None

    @property
    def species(self) -> list[str]:
        """The distinct labels, in component order (a mixed pair's two orders are one species)."""
        return list(dict.fromkeys(self.labels))

    def per_species(self, values: np.ndarray) -> np.ndarray:
        """Sum the component columns of ``values`` (shape (N, K)) per species: shape (N, len(species))."""
        values = np.asarray(values, float)
        species = self.species
        out = np.zeros((values.shape[0], len(species)))
        for k, label in enumerate(self.labels):
            out[:, species.index(label)] += values[:, k]
        return out

    def component_pdf(self, x: np.ndarray) -> np.ndarray:
        """Weighted density of each component at ``x``; shape (K, len(x))."""
        x = np.asarray(x, float)[None, :]
        m, s, w = self.means[:, None], self.sigmas[:, None], self.weights[:, None]
        return w * np.exp(-0.5 * ((x - m) / s) ** 2) / (s * np.sqrt(2 * np.pi))

    def posterior(self, x: np.ndarray) -> np.ndarray:
        """Probability of each component given intensity ``x``; shape (len(x), K)."""
        pdf = self.component_pdf(x).T
        total = pdf.sum(axis=1, keepdims=True)
        total[total <= 0] = 1.0
        return pdf / total


@dataclass
class ColumnResult:
    """Atom columns found in one image.

    Attributes
    ----------
    sites : pandas.DataFrame
        One row per lattice site in the field of view, empty sites included,
        plus one per column found on a hollow site (sublattice 'H'). Columns
        :data:`SITE_COLUMNS` and :data:`SITE_STRUCTURE_COLUMNS`: position (y_px, x_px) in pixels, sublattice
        ('M', 'X' or 'H'), species (e.g. 'Mo', 'S2', 'S', 'empty'), its
        probability, background-corrected integrated intensity, whether a
        peak was detected there, how the position was found ('gaussian',
        'com' or 'lattice' for a site placed from the fitted lattice), the
        cell indices (i, j) within its domain, ``verified`` (False: nobody
        checked it yet), ``domain`` (0, 1, ... largest first: one grain, one
        stacking, one phase), ``phase`` ('2H' or '1T') and ``boundary`` (within
        1.3 nn of another domain, or 1.2 nn of a hole, amorphous or masked area).
    detection_map : ndarray of float32, shape (H, W)
        The map the peaks were picked from (cached to re-threshold without
        recomputing it).
    peaks : ndarray of shape (P, 2)
        Refined (y, x) positions of all detected peaks, on the lattice or not.
    a1, a2 : ndarray of shape (2,)
        Lattice vectors (dy, dx) in pixels.
    nn_px : float
        Nearest-neighbour (M to X) distance in pixels.
    m_offset : ndarray of shape (2,)
        Where the X column sits relative to its metal, in pixels.
    species_fits : dict of str to SpeciesFit
        The mixture fitted on each sublattice ('M', 'X').
    pixel_size : tuple of float or None
        (y, x) Å per pixel if known.
    method : str
        'classical' or 'deep'.
    messages : list of str
        Things a person should know (e.g. a guessed sublattice assignment).
    posteriors : dict of str to DataFrame
        Per fit ('M', 'X' (2H X2 columns), 'X1T' (single-chalcogen columns of
        1T domains)): the probability of every candidate species (columns) for
        each of its sites (index: site_id).
    unexplained : ndarray of shape (K, 2)
        Detected peaks attached to no lattice site (noise, off-site adatoms,
        amorphous matter).
    regions : ndarray of uint8, shape (H, W), optional
        0 where the crystal (or nothing known) is, else the phase code
        (:data:`~napari_stem_defects.vocabulary.PHASE_CODES`) of a hole,
        amorphous patch or masked pixel.
    domains : list of dict
        One per domain: ``domain, grain, phase, n_sites, a1_px, a2_px,
        partner_px, orientation_deg``.
    """

    sites: pd.DataFrame
    detection_map: np.ndarray
    peaks: np.ndarray
    a1: np.ndarray
    a2: np.ndarray
    nn_px: float
    m_offset: np.ndarray
    species_fits: dict[str, SpeciesFit]
    pixel_size: tuple[float, float] | None = None
    method: str = "classical"
    messages: list[str] = field(default_factory=list)
    posteriors: dict[str, pd.DataFrame] = field(default_factory=dict)
    unexplained: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    regions: np.ndarray | None = None
    domains: list[dict] = field(default_factory=list)

    def sites_csv(self) -> pd.DataFrame:
        """The site table with the columns of ``sites.csv``."""
        return self.sites.loc[:, list(SITES_CSV_COLUMNS)].copy()
