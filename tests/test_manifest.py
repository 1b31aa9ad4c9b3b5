"""The npe2 manifest is valid, every command it names imports, and the root stays light."""

from __future__ import annotations

import importlib
import subprocess
import sys

from npe2 import PluginManifest


def test_manifest_validates_and_every_python_name_imports():
    manifest = PluginManifest.from_distribution("napari-stem-defects")
    assert manifest.name == "napari-stem-defects"
    for command in manifest.contributions.commands:
        module, _, attr = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), command.id
    assert {s.key for s in manifest.contributions.sample_data} >= {"mos2_vacancies", "wse2_low_dose", "mowsse_alloy"}


def test_npe2_validate_cli_passes():
    proc = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-stem-defects"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_root_and_algorithms_import_without_qt_or_torch():
    code = ("import sys, napari_stem_defects, napari_stem_defects.simulate, napari_stem_defects.calibration, "
            "napari_stem_defects.io.rsciio_reader, napari_stem_defects.cli;"
            "bad = [m for m in ('torch', 'qtpy', 'PyQt5', 'napari', 'magicgui') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
