"""Digital twins as the annotations a person would hold after detecting and classifying.

For tests, benchmarks and demonstrations of the correction loop: the sites are the
twin's exact ground truth, the cells are classified by a model, and the true
class of every cell is returned beside them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .store import Annotations, ImageReference, LayerAnnotation


def twin_site_table(twin: Any) -> pd.DataFrame:
    """A twin's ground-truth sites as a detected site table (``columns.SITE_COLUMNS``).

    Metal and X2 sites get the (i, j) of the twin's cell that holds them, so
    :func:`~napari_stem_defects.cells.geometry.cells_from_sites` pairs them as
    the twin does; adatoms become 'H' sites with species 'adatom'; empty sites
    get species 'empty'. Positions are exact.
    """
    sites = twin.sites
    cells = twin.cells
    n = len(sites)
    i = np.full(n, -(10**6), np.int64)
    j = np.full(n, -(10**6), np.int64)
    row = pd.Series(np.arange(n), index=sites["site_id"].to_numpy())
    for key in ("m_site_id", "x_site_id"):
        ok = cells[key].to_numpy() >= 0
        r = row.reindex(cells.loc[ok, key].to_numpy()).to_numpy()
        good = ~np.isnan(r)
        i[r[good].astype(int)] = cells.loc[ok, "i"].to_numpy()[good]
        j[r[good].astype(int)] = cells.loc[ok, "j"].to_numpy()[good]
    species = sites["species"].fillna("").astype(str).to_numpy(object)
    sub = sites["sublattice"].astype(str).to_numpy()
    hollow = sub == "H"
    by_cell = cells.set_index("cell_id")[["i", "j"]]
    hc = sites.loc[hollow, "cell_id"].to_numpy()
    known = np.isin(hc, by_cell.index)
    rows_h = np.flatnonzero(hollow)
    i[rows_h[known]] = by_cell.loc[hc[known], "i"].to_numpy()
    j[rows_h[known]] = by_cell.loc[hc[known], "j"].to_numpy()
    species = np.where(hollow & (species != ""), "adatom", species)
    species = np.where(species == "", "empty", species).astype(object)
    empty = species == "empty"
    return pd.DataFrame({
        "site_id": sites["site_id"].to_numpy(np.int64),
        "y_px": sites["y_px"].to_numpy(float),
        "x_px": sites["x_px"].to_numpy(float),
        "sublattice": sub.astype(object),
        "species": species,
        "probability": np.ones(n),
        "intensity": np.full(n, np.nan),
        "detected": ~empty,
        "refined_by": np.full(n, "truth", dtype=object),
        "i": i,
        "j": j,
        "verified": np.zeros(n, bool),
    })


def twin_truth(twin: Any, cells: pd.DataFrame) -> np.ndarray:
    """True class of each row of a cells table made from :func:`twin_site_table` (by metal site id)."""
    true = twin.cells.set_index("m_site_id")["class"]
    return true.reindex(cells["m_site_id"].to_numpy()).fillna("").astype(str).to_numpy(object)


def twin_annotations(
    twin: Any,
    name: str = "twin",
    *,
    classifier: str = "cnn",
    model: Any = None,
) -> tuple[Annotations, np.ndarray]:
    """Annotations of a digital twin as the viewer would hold them after detecting and classifying.

    Sites are the exact ground truth (:func:`twin_site_table`), cells are
    classified by ``classifier`` (no cell verified, every label from the model).
    For tests, benchmarks and demonstrations of the correction loop.

    Parameters
    ----------
    twin : DigitalTwin
        The simulated image and its truth.
    name : str
        Image (layer) name.
    classifier : {'cnn', 'cnn-two-stage', 'physics'}
        Cell classifier (see :func:`~napari_stem_defects.cells.classify.classify_site_table`).
    model : torch.nn.Module, optional
        CNN to use instead of the shipped one.

    Returns
    -------
    annotations : Annotations
    truth : ndarray of str, shape (n_cells,)
        The true class of each cell (row of ``annotations.cells.features``).
    """
    from ..cells.classify import classify_site_table
    from ..cells.geometry import cell_polygons
    from ..cells.shapes_layer import estimate_lattice_vectors

    image = np.asarray(twin.image)
    sites = twin_site_table(twin)
    ps = float(twin.pixel_size)
    nn = twin.nn_px
    cells = classify_site_table(image, sites, twin.material, classifier, nn_px=nn, model=model)
    a1, a2 = estimate_lattice_vectors(sites)
    polygons = cell_polygons(cells, a1, a2)
    from ..columns.points_layer import FEATURE_COLUMNS

    values = {**sites, "y": sites["y_px"] * ps, "x": sites["x_px"] * ps, "source": "model"}
    features = pd.DataFrame({c: values[c] for c in FEATURE_COLUMNS})  # the Points layer's columns and order
    ref = ImageReference.from_array(image, name=name, scale=(ps, ps), units=("angstrom", "angstrom"))
    ann = Annotations(
        image=ref, material=twin.material.name,
        sites=LayerAnnotation("sites", f"{name} columns", sites[["y_px", "x_px"]].to_numpy(float), features,
                              {"material": twin.material.name}),
        cells=LayerAnnotation("cells", f"{name} cells", polygons, cells,
                              {"material": twin.material.name, "classifier": classifier}),
    )
    return ann, twin_truth(twin, cells)


__all__ = ["twin_annotations", "twin_site_table", "twin_truth"]
