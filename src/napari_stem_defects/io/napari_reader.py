"""npe2 reader contribution: open STEM files as calibrated napari image layers.

Importing this module imports neither napari nor Qt; file parsers
(rosettasciio, imageio) are imported only when a file is read.

Each image in a file becomes one ``(data, kwargs, "image")`` layer tuple
with ``scale`` in Å per pixel (``units`` ``"angstrom"``), or 1 ``"pixel"``
when the file holds no calibration; a (t, y, x) stack gets scale 1 on the
frame axis. A :class:`~napari_stem_defects.io.StemReadError` raised while
reading propagates unchanged, so napari shows its message to the user.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union

from .rsciio_reader import is_supported, read_stem_file
from .stem_image import StemImage

__all__ = ["get_reader", "read_layers", "stem_image_to_layer_data"]

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
        ``(data, kwargs, "image")`` per image, see :func:`stem_image_to_layer_data`.

    Raises
    ------
    StemReadError
        A file is corrupt or holds no image; the message says why.
    """
    return [stem_image_to_layer_data(image)
            for p in _as_paths(path) for image in read_stem_file(p)]


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
        :attr:`StemImage.units` and a gray colormap.
    """
    kwargs = {
        "scale": image.scale,
        "units": image.units,
        "name": image.name,
        "metadata": image.metadata,
        "colormap": "gray",
    }
    return image.data, kwargs, "image"
