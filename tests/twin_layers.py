"""A classified digital twin as napari layer data: the model's draft that annotation tests edit.

Imported by tests (``from twin_layers import classified_twin``); the annotation tests that build
the same draft inline (store, reader, save safety) could use it too.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from napari_stem_defects.cells.classify import classify_site_table
from napari_stem_defects.cells.shapes_layer import cells_to_shapes_data
from napari_stem_defects.columns import detect_columns
from napari_stem_defects.columns.points_layer import result_to_points_data
from napari_stem_defects.simulate import ImagingParams, simulate_twin

#: Pixel size of the twins (Å).
PIXEL = 0.12


def classified_twin(shape: tuple[int, int] = (192, 192), seed: int = 11, name: str = "twin",
                    defects: dict[str, float] | None = None) -> SimpleNamespace:
    """A MoS2 twin with its columns detected and cells classified (physics), as layer data.

    Returns
    -------
    SimpleNamespace
        ``twin``; ``points`` and ``points_kwargs`` (the ``<name> columns`` Points layer data and
        keyword arguments); ``shapes`` ((N, 4, 2) polygons) and ``shapes_kwargs`` (``<name> cells``).
    """
    defects = {"V_X1": 0.05, "V_M": 0.03, "V_X2": 0.02} if defects is None else defects
    twin = simulate_twin("MoS2", shape, PIXEL, defects=defects, imaging=ImagingParams(dose=1e6), seed=seed)
    result = detect_columns(twin.image, material="MoS2", pixel_size=PIXEL)
    cells = classify_site_table(None, result.sites, "MoS2", "physics", posteriors=result.posteriors)
    pdata, pk, _ = result_to_points_data(result, scale=(PIXEL, PIXEL), units=("angstrom", "angstrom"),
                                         name=f"{name} columns", parameters={"material": "MoS2"})
    sdata, sk, _ = cells_to_shapes_data(cells, result.a1, result.a2, scale=(PIXEL, PIXEL), units="angstrom",
                                        name=f"{name} cells", metadata={"material": "MoS2"})
    return SimpleNamespace(twin=twin, points=pdata, points_kwargs=pk, shapes=np.asarray(sdata, float),
                           shapes_kwargs=sk)
