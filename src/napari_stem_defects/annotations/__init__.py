"""A person's corrections: edit sites and cells, save them beside the image, restore them exactly.

* :mod:`.tables`: lossless, readable JSON for tables and arrays.
* :mod:`.store`: the versioned annotation file (:func:`save_annotations`,
  :func:`load_annotations`, :func:`sidecar_path`).
* :mod:`.schema`: the rules a file's content must follow (checked on reading and writing).
* :mod:`.safekeeping`: a file that cannot be read is kept aside, never overwritten.
* :mod:`.recovery`: what can be read from a damaged file (:func:`recover_annotations`).
* :mod:`.layers`: annotations from napari layers and back to layer data
  (duck-typed; no napari import).
* :mod:`.edits`: set a class or species, review by uncertainty.
* :mod:`.history`: undo/redo of those edits.

No module here imports napari or Qt.
"""

from __future__ import annotations

from .edits import (
    CLASS_KEYS,
    SOURCE_HUMAN,
    SOURCE_MODEL,
    mark_human,
    next_uncertain,
    set_cell_class,
    set_site_species,
    site_species_choices,
    species_keys,
    sync_positions,
)
from .history import Edit, EditHistory, apply_edit
from .layers import annotation_layer_data, annotations_from_layers, image_path_of
from .store import (
    FORMAT,
    VERSION,
    AnnotationFileError,
    Annotations,
    ImageReference,
    LayerAnnotation,
    image_sha256,
    load_annotations,
    save_annotations,
    sidecar_path,
)
from .recovery import recover_annotations
from .safekeeping import EarlierFileKept
from .tables import decode_array, decode_table, encode_array, encode_table

__all__ = [
    "CLASS_KEYS", "FORMAT", "SOURCE_HUMAN", "SOURCE_MODEL", "VERSION", "AnnotationFileError", "Annotations",
    "EarlierFileKept", "Edit", "EditHistory", "ImageReference", "LayerAnnotation", "annotation_layer_data",
    "annotations_from_layers", "apply_edit", "decode_array", "decode_table", "encode_array", "encode_table",
    "image_path_of", "image_sha256", "load_annotations", "mark_human", "next_uncertain", "recover_annotations",
    "save_annotations",
    "set_cell_class", "set_site_species", "sidecar_path", "site_species_choices", "species_keys",
    "sync_positions",
]
