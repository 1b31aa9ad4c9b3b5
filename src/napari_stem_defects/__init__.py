"""napari-stem-defects: atom columns, species and defects in HAADF-STEM images of 2D TMDs.

The package root stays light: importing it pulls in neither Qt nor torch.
Algorithms live in plain submodules (``simulate``, ``io``, ``calibration``);
napari-facing code lives in ``io.napari_reader``, ``sample_data`` and
``_widgets``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-stem-defects")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "unknown"

__all__ = ["__version__"]
