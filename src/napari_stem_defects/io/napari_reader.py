"""npe2 reader contribution: open STEM files as calibrated napari image layers.

Importing this module imports neither napari nor Qt; file parsers
(rosettasciio, imageio) are imported only when a file is read.

Each image in a file becomes one ``(data, kwargs, "image")`` layer tuple
with ``scale`` in Å per pixel (``units`` ``"angstrom"``), or 1 ``"pixel"``
when the file holds no calibration; a (t, y, x) stack gets scale 1 on the
frame axis. A :class:`~napari_stem_defects.io.StemReadError` raised while
reading propagates unchanged, so napari shows its message to the user.

Saved annotations come back with the image: when a file holding one image
has an annotation file beside it (:func:`~napari_stem_defects.annotations.sidecar_path`,
``scan.dm4.annotations.json``), its sites (Points) and cells (Shapes) layers
follow the image layer, exactly as saved. An image the file gives no
calibration takes the annotation file's. An annotation file that cannot be
read never stops the image from opening: it opens alone, with a warning; an
image that changed since the annotations were saved (another hash) gets a
warning too, and its annotations. A damaged annotation file is read as far
as it can be (:func:`~napari_stem_defects.annotations.recover_annotations`):
the layers that pass the format's rules come back, with a warning saying
what was lost, and the file itself is never overwritten (the next save keeps
it aside as ``.damaged-<time>``). Annotations made on an image of another
shape are not shown. Temporary files a killed save left beside the
annotation file are removed.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union

from .rsciio_reader import is_supported, read_stem_file
from .stem_image import StemImage

__all__ = ["annotated_layer_data", "get_reader", "read_layers", "stem_image_to_layer_data"]

PathLike = Union[str, Path]
LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[Union[PathLike, Sequence[PathLike]]], list[LayerData]]


def _as_paths(path: PathLike | Sequence[PathLike]) -> list[Path]:
    """One path or a sequence of paths as a list of :class:`Path`."""
    if isinstance(path, (str, Path)):
        return [Path(path)]
    return [Path(p) for p in path]


def get_reader(path: PathLike | Sequence[PathLike]) -> ReaderFunction | None:
    """Return the reader function when every path is a file format this plugin reads.

    Parameters
    ----------
    path : str, Path or sequence of them
        What napari asks to open.

    Returns
    -------
    callable or None
        :func:`read_layers`, or ``None`` (so napari can try other readers)
        for an empty list, a directory or an extension not handled here.
    """
    paths = _as_paths(path)
    if not paths or any(p.is_dir() or not is_supported(p) for p in paths):
        return None
    return read_layers


def read_layers(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """Read one or several files into napari layer data tuples.

    Parameters
    ----------
    path : str, Path or sequence of them
        Files to read; every image of every file becomes a layer.

    Returns
    -------
    list of tuple
        ``(data, kwargs, "image")`` per image, see :func:`stem_image_to_layer_data`,
        each file's image followed by its saved annotation layers, if any
        (see :func:`annotated_layer_data`).

    Raises
    ------
    StemReadError
        A file is corrupt or holds no image; the message says why.
    """
    layers: list[LayerData] = []
    for p in _as_paths(path):
        images = read_stem_file(p)
        if len(images) == 1:
            layers += annotated_layer_data(images[0], p)
        else:
            layers += [stem_image_to_layer_data(image) for image in images]
    _scale_bar_for(layers)
    return layers


def _scale_bar_for(layers: list[LayerData]) -> None:
    """Switch napari's scale bar on (once per viewer) when a calibrated image opens in a window."""
    calibrated = any(kind == "image" and kwargs.get("metadata", {}).get("calibrated") for _, kwargs, kind in layers)
    if calibrated and "napari" in sys.modules:
        from .._widgets._dock import show_scale_bar_in_current_viewer

        show_scale_bar_in_current_viewer(True)


def annotated_layer_data(image: StemImage, path: PathLike) -> list[LayerData]:
    """An image's layer data followed by the layers of its annotation file, if there is one.

    Parameters
    ----------
    image : StemImage
        The image read from ``path``.
    path : str or Path
        The image file; its annotation file is
        :func:`~napari_stem_defects.annotations.sidecar_path` of it.

    Returns
    -------
    list of tuple
        The image tuple, then a Points tuple (sites) and/or a Shapes tuple
        (cells). Without a readable annotation file, the image tuple alone
        (a warning says why when the file exists but cannot be read). When
        the file stores no calibration (units "pixel") and the annotations
        do, the image takes their scale and units; when both have one and
        they differ, the saved one too (with a warning), so the annotation
        layers sit on the image.
    """
    from ..annotations.layers import annotation_layer_data
    from ..annotations.store import image_sha256, load_annotations, sidecar_path
    from .atomic import remove_stale_temporaries

    data, kwargs, kind = stem_image_to_layer_data(image)
    sidecar = sidecar_path(path)
    remove_stale_temporaries(sidecar)  # left by a save that was killed
    if not sidecar.is_file():
        return [(data, kwargs, kind)]
    name = Path(path).name
    try:
        ann = load_annotations(sidecar)
        extra = annotation_layer_data(ann)
    except Exception as exc:  # noqa: BLE001 - a damaged annotation file must never stop the image opening
        return [(data, kwargs, kind), *_recovered_layers(image, kwargs, Path(path), sidecar, exc)]
    if tuple(ann.image.shape) != tuple(image.data.shape):
        warnings.warn(f"{name}: the saved annotations in {sidecar.name} were made on an image of shape "
                      f"{tuple(ann.image.shape)}, not {tuple(image.data.shape)}, so they are not shown (they would "
                      f"not sit on the image). The file is left as it is; a save of new annotations keeps it as "
                      f"{sidecar.name}.replaced-<time>.", UserWarning, stacklevel=2)
        return [(data, kwargs, kind)]
    if image_sha256(image.data) != ann.image.sha256:
        warnings.warn(f"{name} changed since its annotations were saved ({ann.saved_at or 'unknown time'}"
                      f"); they are restored, but check that they still fit the image", UserWarning, stacklevel=2)
    return [(data, _with_saved_placement(image, kwargs, ann.image, Path(path), sidecar.name), kind), *extra]


def _recovered_layers(image: StemImage, kwargs: dict[str, Any], path: Path, sidecar: Path,
                      error: Exception) -> list[LayerData]:
    """The layers that can be recovered from a damaged annotation file, with a warning saying what happened."""
    from ..annotations.layers import annotation_layer_data
    from ..annotations.recovery import recover_annotations
    from ..annotations.store import ImageReference

    reference = ImageReference.from_array(image.data, name=image.name, scale=kwargs["scale"], units=kwargs["units"])
    reason = str(error).replace(f"{sidecar}: ", "")
    ann, notes = recover_annotations(sidecar, reference)
    extra: list[LayerData] = []
    if ann is not None and tuple(ann.image.shape) == tuple(image.data.shape):
        ann.image.scale, ann.image.units, ann.image.translate = reference.scale, reference.units, reference.translate
        try:
            extra = annotation_layer_data(ann)
        except Exception as exc:  # noqa: BLE001 - recovery is best effort
            notes.append(f"the recovered layers could not be drawn ({type(exc).__name__}: {exc})")
    elif ann is not None:
        notes.append(f"they were made on an image of shape {tuple(ann.image.shape)}, not {tuple(image.data.shape)}")
    if extra:
        counts = [f"{len(layer.data)} {layer.kind}" for layer in ann.layers()]
        what = f"What could be read is shown ({', '.join(counts)})"
    else:
        what = "Nothing could be recovered from it, so the image opens without them"
    details = f" ({'; '.join(notes)})" if notes else ""
    warnings.warn(f"{path.name}: the saved annotations in {sidecar.name} could not be read ({reason}). {what}"
                  f"{details}. The file is left untouched: the next save keeps it as {sidecar.name}.damaged-<time> "
                  "beside the new one, so nothing in it is lost.", UserWarning, stacklevel=3)
    return extra


def _with_saved_placement(image: StemImage, kwargs: dict[str, Any], ref: Any, path: Path,
                          sidecar_name: str) -> dict[str, Any]:
    """Image kwargs placed like the saved annotations: their calibration and translate, so the layers align.

    The saved calibration is taken when the file has none, or when it differs
    from the file's (a person calibrated the image, e.g. from its lattice,
    before saving); the latter with a warning.
    """
    n = len(image.units)
    file_scale = tuple(float(s) for s in kwargs["scale"])
    file_units = tuple(str(u) for u in kwargs["units"])
    file_calibrated = not all(u == "pixel" for u in file_units[-2:])
    saved_scale = tuple(float(s) for s in ref.scale[-2:])
    saved_units = tuple(str(u) for u in ref.units[-2:])
    out = {**kwargs, "metadata": {**kwargs["metadata"]}}
    if ref.calibrated and len(saved_scale) == 2 and (file_scale[-2:], file_units[-2:]) != (saved_scale, saved_units):
        if file_calibrated:
            warnings.warn(f"{path.name}: its annotations were saved with a pixel size of {saved_scale} "
                          f"{saved_units[-1]} where the file says {file_scale[-2:]} {file_units[-1]}; the saved "
                          "calibration is used so the annotations sit on the image", UserWarning, stacklevel=3)
        out["scale"] = (*file_scale[:-2], *saved_scale)[-n:]
        out["units"] = (*file_units[:-2], *saved_units)[-n:]
        out["metadata"]["calibrated"] = True
        if all(u == "angstrom" for u in saved_units):
            out["metadata"]["pixel_size_A"] = saved_scale
        out["metadata"]["calibration_source"] = f"annotation file {sidecar_name}"
    translate = tuple(float(t) for t in ref.translate[-2:])
    if any(translate):
        out["translate"] = ((0.0,) * n + translate)[-n:]
    return out


def stem_image_to_layer_data(image: StemImage) -> LayerData:
    """One :class:`StemImage` as a napari ``(data, kwargs, "image")`` tuple.

    Parameters
    ----------
    image : StemImage
        A read image.

    Returns
    -------
    tuple
        ``(image.data, {"scale", "units", "name", "metadata", "colormap"}, "image")``
        with ``scale`` and ``units`` from :attr:`StemImage.scale` and
        :attr:`StemImage.units` and a gray colormap; a stack's axes are labelled
        ``frame, y, x`` (``axis_labels``).
    """
    kwargs = {
        "scale": image.scale,
        "units": image.units,
        "name": image.name,
        "metadata": image.metadata,
        "colormap": "gray",
    }
    if image.is_stack:
        kwargs["axis_labels"] = ("frame", "y", "x")
    return image.data, kwargs, "image"
