"""The settings of a batch: every setting of ``analyze``, the models they resolve to, and their hash.

Two runs with the same :meth:`BatchSettings.fingerprint` (the settings, the
SHA-256 of every model file they use, and the format version of the files)
give the same results for the same file, so a re-run may keep them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..heatmaps.regions import MIN_AREA_NN2

#: Relative difference between the file's pixel size and the lattice's above which a file is flagged.
DEFAULT_TOLERANCE = 0.03


@dataclass(frozen=True)
class BatchSettings:
    """What every file of a batch is analysed with (the options of ``napari-stem-defects analyze``).

    Attributes
    ----------
    material : str, optional
        Host material (cells, statistics and heatmaps need it).
    method, threshold, refine, classifier, column_classifier, heatmaps, heatmap_threshold, heatmap_window, heatmap_min_area,
    cell_model, column_model
        As the ``analyze`` options of the same names
        (:func:`napari_stem_defects.analyze.analyze_image`); a classifier left None takes the
        default (:func:`~napari_stem_defects.cells.classify.resolve_classifiers`) when the settings
        are made, so files and fingerprints record the one used.
    pixel_size : float, optional
        Pixel size in Å for every file, instead of the files' own.
    calibration_tolerance : float
        Relative difference between a file's pixel size and the one its lattice
        implies above which the file gets a warning.
    force : bool
        Analyse files the image check refuses (``analyze --force``); otherwise such a
        file is recorded as failed with what it looks like instead.
    include_boundary : bool
        Count boundary cells in the statistics (``analyze --include-boundaries``).
    trust_model_file : bool
        Let ``method='atomai'`` unpickle ``column_model`` (``analyze --trust-model-file``).
    mask : str, optional
        A mask file (``analyze --mask``) applied to every file of its shape; a file of
        another shape fails with a message.
    microscope : dict, optional
        Typed microscope settings (``analyze --kv --convergence --detector``, as
        :meth:`~napari_stem_defects.simulate.microscope.MicroscopeSettings.as_dict`); by
        default each file's own, when it records them.
    """

    material: str | None = None
    method: str = "classical"
    threshold: float | None = None
    refine: str = "gaussian"
    classifier: str | None = None
    column_classifier: str | None = None
    heatmaps: str = "none"
    heatmap_threshold: float = 0.5
    heatmap_window: float | None = None
    heatmap_min_area: float = MIN_AREA_NN2
    cell_model: str | None = None
    column_model: str | None = None
    pixel_size: float | None = None
    calibration_tolerance: float = DEFAULT_TOLERANCE
    force: bool = False
    include_boundary: bool = False
    mask: str | None = None
    microscope: dict[str, Any] | None = None
    strain: bool = False
    strain_reference: str = "domain"
    trust_model_file: bool = False

    def __post_init__(self) -> None:
        from ..cells.classify import resolve_classifiers

        classifier, column_classifier = resolve_classifiers(self.material, self.classifier, self.column_classifier)
        object.__setattr__(self, "classifier", classifier)  # frozen: the one place the defaults are filled in
        object.__setattr__(self, "column_classifier", column_classifier)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for JSON and for sending to workers)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BatchSettings:
        """The inverse of :meth:`as_dict` (unknown keys are an error)."""
        return cls(**values)

    def analysis_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`napari_stem_defects.analyze.analyze_image`."""
        return {"material": self.material, "method": self.method, "threshold": self.threshold,
                "refine": self.refine, "classifier": self.classifier,
                "column_classifier": self.column_classifier, "heatmaps": self.heatmaps,
                "heatmap_threshold": self.heatmap_threshold, "heatmap_window": self.heatmap_window,
                "heatmap_min_area": self.heatmap_min_area, "cell_model": self.cell_model,
                "column_model": self.column_model, "force": self.force,
                "trust_model_file": self.trust_model_file,
                "include_boundary": self.include_boundary,
                "pixel_size_source": "typed" if self.pixel_size else "file",
                "microscope": self._microscope(), "strain": self.strain,
                "strain_reference": self.strain_reference}

    def _microscope(self) -> Any:
        from ..simulate.microscope import MicroscopeSettings

        return None if self.microscope is None else MicroscopeSettings.from_dict(dict(self.microscope))

    def check(self) -> None:
        """Refuse bad settings before any file is read.

        Raises
        ------
        ValueError
            Unknown method, refinement, classifier or material, bad heatmap
            settings, a non-positive pixel size, or a model that does not exist.
        """
        from ..analysis_heatmaps import HEATMAP_CHOICES, check_heatmap_settings
        from ..cells.classify import CLASSIFIERS
        from ..columns.context_classifier import COLUMN_CLASSIFIERS
        from ..columns.pipeline import METHODS, REFINEMENTS
        from ..materials import parse_material

        for name, value, allowed in (("method", self.method, METHODS), ("refine", self.refine, REFINEMENTS),
                                     ("classifier", self.classifier, CLASSIFIERS),
                                     ("column classifier", self.column_classifier, COLUMN_CLASSIFIERS),
                                     ("heatmaps", self.heatmaps, HEATMAP_CHOICES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        if self.material:
            parse_material(self.material)
        if self.heatmaps != "none":
            check_heatmap_settings(self.heatmaps, self.material, self.heatmap_threshold, self.heatmap_window,
                                    self.heatmap_min_area)
        if self.pixel_size is not None and not float(self.pixel_size) > 0:
            raise ValueError(f"the pixel size must be a positive number of Å, got {self.pixel_size}")
        self._microscope()  # settings outside the table are refused here, before any file
        self.models()

    def models(self) -> dict[str, dict[str, str]]:
        """The model files these settings use: ``{role: {"name", "path", "sha256"}}``.

        Roles: ``cells`` (CNN classifiers with a material), ``columns`` (deep
        method), ``column_classifier`` (the context classifier), ``heatmaps`` (with a heatmap engine).

        Raises
        ------
        ValueError
            A model name or file that does not exist.
        """
        from ..model_registry import SHIPPED, resolve_model

        used: dict[str, tuple[str, Path]] = {}
        try:
            if self.material and self.classifier != "physics":
                used["cells"] = (self.cell_model or SHIPPED, resolve_model("cells", self.cell_model))
            if self.method == "deep":
                used["columns"] = (self.column_model or SHIPPED, resolve_model("columns", self.column_model))
        except KeyError as err:
            raise ValueError(err.args[0] if err.args else str(err)) from None
        if self.material and self.column_classifier == "context":
            from ..columns.context_classifier import WEIGHTS_NAME
            from ..network_io import packaged_weights_path

            used["column_classifier"] = (SHIPPED, packaged_weights_path(WEIGHTS_NAME))
        if self.heatmaps != "none":
            from ..heatmaps.engines import WEIGHTS
            from ..network_io import packaged_weights_path

            used["heatmaps"] = (f"{SHIPPED} {self.heatmaps}", packaged_weights_path(WEIGHTS[self.heatmaps]))
        out = {}
        for role, (name, path) in used.items():
            if not Path(path).is_file():
                raise ValueError(f"the {role} model {name!r} has no weights file at {path}")
            out[role] = {"name": str(name), "path": str(Path(path).resolve()), "sha256": model_sha256(path)}
        return out

    def fingerprint(self, models: dict[str, dict[str, str]] | None = None) -> str:
        """SHA-256 of the settings, the model files' hashes and the format version of the files written."""
        from ..analyze import FORMAT_VERSION

        models = self.models() if models is None else models
        settings = self.as_dict()
        if settings["column_classifier"] == "intensity":  # the analysis before the setting existed: same print
            del settings["column_classifier"]
        payload = {"settings": settings, "models": {k: v["sha256"] for k, v in sorted(models.items())},
                   "format_version": FORMAT_VERSION}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


_MODEL_HASHES: dict[tuple[str, int, int], str] = {}


def model_sha256(path: str | Path) -> str:
    """SHA-256 of a model file, remembered per (path, size, modification time) in this process."""
    from .inputs import file_sha256

    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _MODEL_HASHES:
        _MODEL_HASHES[key] = file_sha256(path)
    return _MODEL_HASHES[key]


__all__ = ["DEFAULT_TOLERANCE", "BatchSettings", "model_sha256"]
