"""The whole image-series analysis behind the "Dynamics" widget and ``napari-stem-defects dynamics``.

Stages, each a plain function of its own module:

1. :func:`~.registration.register_stack`: rigid and non-rigid drift registration.
2. :func:`~napari_stem_defects.columns.pipeline.detect_columns` on every *unregistered* frame (no
   interpolation blur), positions then mapped into reference (frame 0) coordinates.
3. :func:`~.tracking.track_columns` and :func:`~.events.detect_events`: lattice sites linked over
   time; sites emptied, filled, moved, and species changes.
4. :func:`~.instability.compute_instability`: each column's intensity change between frames,
   plain and corrected for the change its neighbours share (the default instability); with an
   encoder (our autoencoder, or atomai's rVAE, trained on the stack's own atom-centred patches)
   also the change of each column's code, fused step by step with the corrected change;
   :func:`~.clusters.unstable_clusters` groups the unstable sites.
5. Per-frame defect counts from the cell classifier (when a material is known).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..calibration import LatticeNotFoundError
from ..columns.pipeline import detect_columns
from ..columns.result import EMPTY, ColumnDetectionError, ColumnResult
from ..materials import Material, parse_material
from .clusters import Clusters, unstable_clusters
from .events import detect_events
from .instability import InstabilityResult, compute_instability, instability_map
from .registration import Registration, register_stack
from .tracking import track_columns, track_features

#: Columns of :attr:`DynamicsResult.site_table` (one row per tracked site).
SITE_INSTABILITY_COLUMNS = (
    "track_id", "y_px", "x_px", "sublattice", "n_events", "instability", "intensity_change", "cluster_id",
    "latent_change", "corrected_change",
)
#: Share of the progress bar taken by each stage.
_STAGES = {"register": 0.15, "detect": 0.45, "track": 0.05, "instability": 0.25, "counts": 0.10}


@dataclass
class DynamicsResult:
    """Everything :func:`analyze_stack` found in one image series.

    Attributes
    ----------
    registration : Registration
        Drift shifts, the non-rigid fields and the registered stack.
    columns : list of ColumnResult or None
        Columns of every frame, in that frame's own (unregistered) pixels; None for a frame
        where no lattice was found (skipped, with a message).
    tracks : DataFrame
        One row per site and frame (:data:`~.tracking.TRACK_COLUMNS`), reference coordinates.
    track_features : DataFrame
        One row per track (:data:`~.tracking.TRACK_FEATURE_COLUMNS`).
    events : DataFrame
        Sites emptied, filled, moved and species changes (:data:`~.events.EVENT_COLUMNS`).
    instability : InstabilityResult or None
        Latent-code change per site and step, with the intensity-change baseline.
    site_table : DataFrame
        One row per tracked site inside the common field of view
        (:data:`SITE_INSTABILITY_COLUMNS`).
    clusters : Clusters or None
        Dense groups of unstable sites.
    instability_map : ndarray of float32, shape (H, W)
        Site instability splatted into an image in reference coordinates.
    defect_counts : DataFrame
        Cells of each class per frame (empty without a material).
    pixel_size : float or None
        Å per pixel.
    material : Material or None
        Host material.
    nn_px : float
        Metal to X2 distance in pixels.
    messages : list of str
        What a person should know (frames that failed, skipped stages).
    settings : dict
        The options the analysis ran with.
    timings : dict of str to float
        Seconds spent in each stage (register, detect, track, instability, counts).
    """

    registration: Registration
    columns: list[ColumnResult | None]
    tracks: pd.DataFrame
    track_features: pd.DataFrame
    events: pd.DataFrame
    instability: InstabilityResult | None
    site_table: pd.DataFrame
    clusters: Clusters | None
    instability_map: np.ndarray
    defect_counts: pd.DataFrame
    pixel_size: float | None
    material: Material | None
    nn_px: float
    messages: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class _Progress:
    """Maps a stage's own (done, total) onto the whole run's 0-1 and checks for cancel."""

    def __init__(self, report: Callable[[float], None] | None, cancel: Callable[[], bool] | None) -> None:
        self.report, self.cancel, self.start = report, cancel, 0.0
        self.timings: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def stage(self, name: str) -> Callable[[int, int], None]:
        self.check()
        self.finish()
        self._current = (name, time.perf_counter())
        start, width = self.start, _STAGES[name]
        self.start += width

        def step(done: int, total: int) -> None:
            if self.report is not None:
                self.report(start + width * done / max(total, 1))
        step(0, 1)
        return step

    def finish(self) -> None:
        """Close the running stage's timer."""
        if self._current is not None:
            name, began = self._current
            self.timings[name] = round(time.perf_counter() - began, 3)
            self._current = None

    def check(self) -> None:
        if self.cancel is not None and self.cancel():
            raise InterruptedError("cancelled")


def check_stack(stack: np.ndarray) -> np.ndarray:
    """Return a (T, H, W) float32 stack or raise ValueError saying what is wrong with it."""
    arr = np.asarray(stack)
    if arr.ndim == 4 and arr.shape[-1] in (3, 4):
        raise ValueError(f"got an RGB(A) stack of shape {arr.shape}; open the raw HAADF frames instead")
    if arr.ndim != 3:
        raise ValueError(f"expected a (frames, y, x) image series, got shape {arr.shape}; "
                         "stack single images first (napari: Layers > Stack > Images to stack)")
    if arr.shape[0] < 2:
        raise ValueError("an image series needs at least 2 frames")
    if min(arr.shape[1:]) < 64:
        raise ValueError(f"frames of {arr.shape[1]} x {arr.shape[2]} px are too small; use at least 64 x 64")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"expected real pixel values, got {arr.dtype}")
    bad = [t for t in range(arr.shape[0]) if not np.isfinite(arr[t]).any()]
    if bad:
        raise ValueError(f"frames {bad} hold no finite values")
    return arr.astype(np.float32, copy=False)


def analyze_stack(
    stack: np.ndarray,
    material: str | Material | None = None,
    pixel_size: float | None = None,
    *,
    nonrigid: bool = True,
    method: str = "classical",
    max_gap: int = 2,
    min_persistence: int = 1,
    latent_dim: int | None = None,
    epochs: int | None = None,
    encoder: str = "intensity",
    score: str | None = None,
    classifier: str | None = "physics",
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> DynamicsResult:
    """Register an image series, track its columns and map where the lattice is unstable.

    Parameters
    ----------
    stack : ndarray, shape (T, H, W)
        HAADF frames in acquisition order.
    material : str or Material, optional
        Host material (names species and the metal sublattice; needed for defect counts).
    pixel_size : float, optional
        Å per pixel (areas in nm^2, distances in pm).
    nonrigid : bool
        Also correct a smooth per-frame displacement field after the rigid shift.
    method : {'classical', 'deep'}
        Column detection map.
    max_gap : int
        Frames a site may go unseen and keep its track.
    min_persistence : int
        Frames a new state must last to count as an event (1: every change counts).
    latent_dim : int, optional
        Size of the encoder's code (default 6 for the autoencoder, 4 content variables for the rVAE).
    epochs : int, optional
        Encoder training epochs (default: chosen from the number of patches).
    encoder : {'intensity', 'autoencoder', 'rvae'}
        Patch encoder of the instability (see :func:`~.instability.compute_instability`;
        'intensity', the default: no network; 'rvae' needs atomai).
    score : {'corrected', 'fused', 'latent'}, optional
        The instability: the neighbour-corrected intensity change (default without an encoder),
        the code's change fused with it (default with an encoder), or the code's alone.
    classifier : {'physics', 'cnn', 'cnn-two-stage'} or None
        Cell classifier for the per-frame defect counts; None skips them.
    seed : int
        Seed of the autoencoder training.
    progress : callable, optional
        Called with the fraction done (0-1).
    cancel : callable, optional
        Returning True stops the run with InterruptedError.

    Returns
    -------
    DynamicsResult
    """
    arr = check_stack(stack)
    mat = parse_material(material) if material is not None else None
    steps = _Progress(progress, cancel)
    messages: list[str] = []

    reg = register_stack(arr, nonrigid=nonrigid, progress=steps.stage("register"), cancel=cancel)

    detect_step = steps.stage("detect")
    columns: list[ColumnResult | None] = []
    frames: list[pd.DataFrame] = []
    for t in range(arr.shape[0]):
        steps.check()
        try:
            result = detect_columns(arr[t], method=method, material=mat, pixel_size=pixel_size)
        except (ColumnDetectionError, LatticeNotFoundError) as err:
            # one bad frame (a flash, a blurred scan) must not stop the series: its sites are a gap
            messages.append(f"frame {t}: no columns found ({err}); the frame is skipped")
            columns.append(None)
            frames.append(pd.DataFrame(columns=["y_px", "x_px", "sublattice", "species"]))
            detect_step(t + 1, arr.shape[0])
            continue
        columns.append(result)
        sites = result.sites.copy()
        if mat is None:  # free-mixture labels (M1, X2, ...) are fitted per frame: not comparable across frames
            sites["species"] = sites["species"].where(sites["species"] == EMPTY, sites["sublattice"])
        ref = reg.to_reference(t, sites[["y_px", "x_px"]].to_numpy(float))
        sites["y_px"], sites["x_px"] = ref[:, 0], ref[:, 1]
        frames.append(sites)
        detect_step(t + 1, arr.shape[0])
    found = [c for c in columns if c is not None]
    if len(found) < 2:
        raise ColumnDetectionError(f"columns were found in {len(found)} of {len(columns)} frames; "
                                   "a series needs at least 2 (" + "; ".join(messages[:2]) + ")")
    nn_px = float(np.median([c.nn_px for c in found]))

    track_step = steps.stage("track")
    tracks = track_columns(frames, max_displacement_px=0.45 * nn_px, max_gap=max_gap)
    inside = _inside_valid(reg.valid, margin=nn_px)
    events = detect_events(tracks, hop_distance_px=1.25 * np.sqrt(3.0) * nn_px, move_threshold_px=0.3 * nn_px,
                           min_persistence=min_persistence, valid=inside)
    features = track_features(tracks, events)
    track_step(1, 1)

    # sites whose whole patch (2.5 nn) stays in the common field of view
    site_table = _site_positions(tracks, features, _inside_valid(reg.valid, margin=1.3 * nn_px))
    positions = site_table[["y_px", "x_px"]].to_numpy(float)
    inst_step = steps.stage("instability")
    if encoder != "intensity":
        _load_torch_dynamo_without_triton()
    inst_step(1, 100)  # torch is loaded (seconds, the first time): the bar moves on
    instability = compute_instability(reg.registered, positions, patch_px=2.5 * nn_px, valid=reg.valid,
                                      groups=site_table["sublattice"].to_numpy(), latent_dim=latent_dim,
                                      epochs=epochs, seed=seed, encoder=encoder, score=score,
                                      progress=inst_step, cancel=cancel)
    site_table["instability"] = instability.per_site
    site_table["intensity_change"] = instability.baseline_per_site
    site_table["latent_change"] = instability.latent_per_site
    site_table["corrected_change"] = instability.corrected_per_site
    clusters = unstable_clusters(positions, instability.per_site, eps_px=2.0 * nn_px, min_samples=3,
                                 pixel_size_A=pixel_size)
    site_table["cluster_id"] = clusters.labels
    imap = instability_map(arr.shape[1:], positions, instability.per_site, sigma_px=0.5 * nn_px)

    counts_step = steps.stage("counts")
    counts = pd.DataFrame()
    if mat is not None and classifier is not None:
        counts = defect_counts(arr, columns, mat, classifier, progress=counts_step, cancel=cancel)
    elif mat is None:
        messages.append("no material given: per-frame defect counts skipped")
    if mat is None:
        messages.append("no material given: species are not compared between frames "
                        "(no species_changed events; sites emptied, filled and moved are found)")
    steps.finish()
    if progress is not None:
        progress(1.0)
    settings = {"nonrigid": nonrigid, "method": method, "max_gap": max_gap, "min_persistence": min_persistence,
                "latent_dim": latent_dim, "epochs": epochs, "classifier": classifier, "seed": seed,
                "encoder": encoder, "score": instability.score}
    return DynamicsResult(
        registration=reg, columns=columns, tracks=tracks, track_features=features, events=events,
        instability=instability, site_table=site_table[list(SITE_INSTABILITY_COLUMNS)], clusters=clusters,
        instability_map=imap, defect_counts=counts, pixel_size=pixel_size, material=mat, nn_px=nn_px,
        messages=messages, settings=settings, timings=steps.timings,
    )


def _load_torch_dynamo_without_triton() -> None:
    """Import ``torch._dynamo`` (the autoencoder's optimiser loads it) with triton hidden, where needed.

    triton's own LLVM clashes with the libLLVM that Mesa's OpenGL drivers (llvmpipe, e.g. under
    Xvfb or a remote desktop, and radeonsi) load into a napari process: importing triton there is
    a segmentation fault. torch runs without it (triton only serves ``torch.compile`` on GPUs), so
    in such a process it is hidden while torch._dynamo is imported.
    """
    if "triton" in sys.modules or "torch._dynamo" in sys.modules:
        return
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            if "libLLVM" not in maps.read():
                return
    except OSError:  # not Linux: no Mesa LLVM
        return
    sys.modules["triton"] = None  # type: ignore[assignment]  # ``import triton`` raises ImportError
    try:
        import torch._dynamo  # noqa: F401
    except ImportError:
        pass  # no torch: the instability stage says so
    finally:
        if sys.modules.get("triton", False) is None:
            del sys.modules["triton"]


def _inside_valid(valid: np.ndarray, margin: float) -> Callable[[np.ndarray], np.ndarray]:
    """A test ``points -> bool`` for being inside the common field of view, ``margin`` px from its edge."""
    from scipy import ndimage

    core = ndimage.binary_erosion(valid, iterations=max(int(np.ceil(margin)), 1))

    def inside(points: np.ndarray) -> np.ndarray:
        pts = np.rint(np.asarray(points, float)).astype(int)
        ok = (pts[:, 0] >= 0) & (pts[:, 0] < core.shape[0]) & (pts[:, 1] >= 0) & (pts[:, 1] < core.shape[1])
        out = np.zeros(len(pts), bool)
        out[ok] = core[pts[ok, 0], pts[ok, 1]]
        return out
    return inside


def _site_positions(tracks: pd.DataFrame, features: pd.DataFrame,
                    inside: Callable[[np.ndarray], np.ndarray]) -> pd.DataFrame:
    """One row per track inside the common field of view, at its median position."""
    pos = tracks.groupby("track_id")[["y_px", "x_px"]].median()
    table = features.set_index("track_id")[["sublattice", "n_events"]].join(pos, how="inner").reset_index()
    keep = inside(table[["y_px", "x_px"]].to_numpy(float))
    return table.loc[keep].reset_index(drop=True)


def defect_counts(
    stack: np.ndarray,
    columns: list[ColumnResult | None],
    material: Material,
    classifier: str = "physics",
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> pd.DataFrame:
    """Cells of each class in every frame, from the cell classifier.

    Parameters
    ----------
    stack : ndarray, shape (T, H, W)
        The unregistered frames the columns were found on.
    columns : list of ColumnResult or None
        Columns of each frame (None: frame skipped, no counts).
    material : Material
        Host material.
    classifier : {'physics', 'cnn', 'cnn-two-stage'}
        Which cell classifier.
    progress, cancel : callable, optional
        ``progress(done, total)`` per frame; ``cancel()`` True raises InterruptedError.

    Returns
    -------
    DataFrame
        One row per frame: ``frame``, ``n_cells``, one column per class (counts) and
        ``vacancies`` (cells holding at least one vacancy).
    """
    from ..cells.classify import classify_site_table

    rows = []
    for t, result in enumerate(columns):
        if cancel is not None and cancel():
            raise InterruptedError("cancelled")
        if result is None:  # a frame without columns: no counts
            continue
        cells = classify_site_table(stack[t], result.sites, material, classifier,
                                    posteriors=result.posteriors, nn_px=result.nn_px)
        counts = cells["class"].value_counts()
        row = {"frame": t, "n_cells": int(len(cells)), **{str(k): int(v) for k, v in counts.items()}}
        row["vacancies"] = int(sum(v for k, v in counts.items() if str(k).startswith("V_")))
        rows.append(row)
        if progress is not None:
            progress(t + 1, len(columns))
    table = pd.DataFrame(rows).fillna(0)
    classes = sorted(c for c in table.columns if c not in ("frame", "n_cells", "vacancies"))
    return table[["frame", "n_cells", "vacancies", *classes]].astype(
        {c: int for c in ("n_cells", "vacancies", *classes)})
