"""napari layer data for the structure of a specimen: its phase map, and the peaks no site explains.

Plain functions returning napari ``LayerDataTuple``s (no Qt): the columns dock
adds them beside the columns layer, the sample data uses the same colours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..vocabulary import PHASE_CODES, PHASE_OF_CODE
from .phase_map import phase_maps
from .points_layer import LayerDataTuple
from .result import ColumnResult

#: RGBA colour of each phase-map code: 2H left clear (the image shows it), 1T green, holes dark blue,
#: amorphous orange, masked grey, boundary bands purple.
PHASE_COLOURS: dict[int, tuple[float, float, float, float]] = {
    PHASE_CODES["none"]: (0.0, 0.0, 0.0, 0.0),
    PHASE_CODES["2H"]: (0.0, 0.0, 0.0, 0.0),
    PHASE_CODES["1T"]: (0.17, 0.63, 0.17, 1.0),
    PHASE_CODES["hole"]: (0.1, 0.1, 0.6, 1.0),
    PHASE_CODES["amorphous"]: (1.0, 0.5, 0.05, 1.0),
    PHASE_CODES["masked"]: (0.5, 0.5, 0.5, 1.0),
    PHASE_CODES["boundary"]: (0.8, 0.2, 0.6, 1.0),
}


def phase_layer_data(result: ColumnResult, name: str, scale: Sequence[float] = (1.0, 1.0),
                     units: Sequence[str] = ("pixel", "pixel"), translate: Sequence[float] = (0.0, 0.0),
                     opacity: float = 0.35) -> LayerDataTuple:
    """A Labels layer of the phase map of one detected image (codes of :data:`~napari_stem_defects.vocabulary.PHASE_CODES`).

    Its ``features`` name each code's phase; its metadata hold the area share of each phase and the
    domains found.

    Examples
    --------
    >>> from napari_stem_defects.columns.result import ColumnResult
    >>> sites = pd.DataFrame({"y_px": [2.0, 2.0], "x_px": [1.0, 8.0], "domain": [0, 1], "phase": ["2H", "1T"]})
    >>> r = ColumnResult(sites=sites, detection_map=np.zeros((4, 10), np.float32), peaks=np.zeros((0, 2)),
    ...                  a1=np.ones(2), a2=np.ones(2), nn_px=3.0, m_offset=np.ones(2), species_fits={})
    >>> data, kwargs, kind = phase_layer_data(r, "scan phases")
    >>> kind, data[0].tolist(), kwargs["metadata"]["fraction"]["1T"]
    ('labels', [1, 1, 1, 1, 1, 2, 2, 2, 2, 2], 0.5)
    """
    phase, _ = phase_maps(result.sites, result.detection_map.shape, result.regions)
    counts = np.bincount(phase.ravel(), minlength=len(PHASE_OF_CODE))
    fraction = {PHASE_OF_CODE[c]: float(n) / phase.size for c, n in enumerate(counts) if n and c in PHASE_OF_CODE}
    codes = sorted(PHASE_OF_CODE)
    kwargs = {
        "name": name, "scale": tuple(scale), "units": tuple(units), "translate": tuple(translate),
        "opacity": opacity, "colormap": {None: (0, 0, 0, 0), **{c: PHASE_COLOURS[c] for c in codes}},
        "features": pd.DataFrame({"index": codes, "phase": [PHASE_OF_CODE[c] for c in codes]}),
        "metadata": {"codes": dict(PHASE_CODES), "fraction": fraction,
                     "domains": [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}
                                 for d in result.domains]},
    }
    return phase, kwargs, "labels"


def unexplained_layer_data(result: ColumnResult, name: str, scale: Sequence[float] = (1.0, 1.0),
                           units: Sequence[str] = ("pixel", "pixel"),
                           translate: Sequence[float] = (0.0, 0.0)) -> LayerDataTuple:
    """A Points layer of the detected peaks attached to no lattice site (red crosses, 0.3 nn)."""
    data = np.asarray(result.unexplained, float).reshape(-1, 2)
    kwargs = {"name": name, "scale": tuple(scale), "units": tuple(units), "translate": tuple(translate),
              "symbol": "cross", "size": 0.3 * result.nn_px, "face_color": "#EE3377", "border_width": 0,
              "metadata": {"what": "detected peaks no lattice site explains (noise, off-site adatoms, "
                                   "amorphous matter)"}}
    return data, kwargs, "points"
