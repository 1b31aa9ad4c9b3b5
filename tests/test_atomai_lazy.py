"""atomai is imported only where its features run: not by the plugin's entry points nor the modules that use it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

import napari_stem_defects

MANIFEST = Path(napari_stem_defects.__file__).parent / "napari.yaml"


def _python_names() -> list[str]:
    contributions = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))["contributions"]
    return [c["python_name"] for c in contributions["commands"]]


def test_manifest_entry_points_import_without_atomai():
    names = _python_names()
    assert len(names) >= 10 and any("columns_widget" in n for n in names)
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    module, _, attr = name.partition(':')\n"
        "    assert callable(getattr(importlib.import_module(module), attr)), name\n"
        "import napari_stem_defects.columns.atomai_engine, napari_stem_defects.annotations.atomai_pairs\n"
        "import napari_stem_defects.dynamics.rvae_encoder, napari_stem_defects.dynamics.pipeline\n"
        "import napari_stem_defects.columns.pipeline, napari_stem_defects.analyze, napari_stem_defects.cli\n"
        "print(sorted(m for m in sys.modules if m == 'atomai' or m.startswith('atomai.')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
