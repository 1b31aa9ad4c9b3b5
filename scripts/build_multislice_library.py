"""Build a seeded validation library of multislice twins (abTEM PRISM), never to be trained on.

For every microscope setting x material: one clean multislice image with every defect
class the material allows, recorded at each dose from that one clean image, written
as the ``simulate`` command writes a twin (``image.tif``, ``sites.csv``, ``cells.csv``,
``twin.json``) under ``OUT/<setting>/<material>/dose_<dose>/``, plus ``OUT/index.csv``
(one row per image) and the clean image ``OUT/<setting>/<material>/clean.npy``
(detected fraction). Resumable: a (setting, material) whose images are all written is
skipped. Prints the time of every image.

Usage::

    PYTHONPATH=src python scripts/build_multislice_library.py --out /work/mslib [--settings 60kV 200kV]
        [--materials MoS2 WSe2 ...] [--threads 1] [--frozen-phonons 0]

A material may state its metal dopant (``WSe2+Mn``): the image's ``dopant_M`` cells then
hold that element (``sites.csv`` names it as the metal site's species; ``index.csv`` in
its ``dopant`` column). The dopant validation set (:data:`DOPANT_MATERIALS`, the 3d
dopants of the context-encoder study) is built into its own folder::

    PYTHONPATH=src python scripts/build_multislice_library.py --out /work/mslib_dopants \
        --settings 80kV 60kV --materials dopants

Needs the ``multislice`` extra (abTEM). On the 2-core development machine (shared, one
thread) a 60 kV image takes about 5-10 minutes and a 200 kV image about 3 times that;
on a GPU (``abtem.config.set({'device': 'gpu'})``) far less.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
import zlib
from pathlib import Path

import numpy as np

from napari_stem_defects.composition import allowed_classes
from napari_stem_defects.materials import parse_material
from napari_stem_defects.simulate import ImagingParams
from napari_stem_defects.simulate.defects import stated_foreign_atom
from napari_stem_defects.simulate.export import META_FILE, write_twin
from napari_stem_defects.simulate.microscope import MicroscopeSettings
from napari_stem_defects.simulate.multislice import simulate_multislice_twin
from napari_stem_defects.simulate.twin import with_dose

#: Microscope settings of the library: low-voltage and high-voltage HAADF setups.
SETTINGS: dict[str, dict] = {
    "60kV": dict(microscope=MicroscopeSettings(energy_kV=60, convergence_mrad=28, detector_inner_mrad=50,
                                               detector_outer_mrad=200, source_size_A=0.4),
                 pixel_size=0.13, shape=(320, 320)),
    "200kV": dict(microscope=MicroscopeSettings(energy_kV=200, convergence_mrad=22, detector_inner_mrad=75,
                                                detector_outer_mrad=180, source_size_A=0.35),
                  pixel_size=0.12, shape=(288, 288)),
    "80kV": dict(microscope=MicroscopeSettings(energy_kV=80, convergence_mrad=30, detector_inner_mrad=70,
                                               detector_outer_mrad=200, source_size_A=0.4),
                 pixel_size=0.15, shape=(288, 288)),
    # a second low-voltage setup: smaller aperture, a detector reaching lower (WS2, MoSe2 in issue 24)
    "60kV-25mrad": dict(microscope=MicroscopeSettings(energy_kV=60, convergence_mrad=25, detector_inner_mrad=60,
                                                      detector_outer_mrad=190, source_size_A=0.4),
                        pixel_size=0.12, shape=(320, 320)),
}
MATERIALS = ("MoS2", "WSe2", "MoTe2", "Mo0.5W0.5S2", "Janus-MoSSe")
#: The dopant validation set (``--materials dopants``): 3d metal dopants in WSe2 and MoS2.
DOPANT_MATERIALS = ("WSe2+V", "WSe2+Cr", "WSe2+Mn", "WSe2+Co", "MoS2+V", "MoS2+Cr")
DOSES = (1e4, 1e5, 1e6)
#: Fraction of the cells per defect class, and of dopant_M cells where the material states its dopant.
PLAIN, DOPED = (0.015, 0.03), (0.06, 0.10)
INDEX_COLUMNS = ("setting", "material", "dose", "path", "height", "width", "pixel_size_A", "energy_kV",
                 "convergence_mrad", "detector_inner_mrad", "detector_outer_mrad", "source_size_A",
                 "frozen_phonons", "rotation_deg", "n_sites", "n_cells", "defect_cells", "seed", "seconds",
                 "dopant")


def seed_of(*parts: object) -> int:
    """A fixed seed per library entry."""
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


def defect_mix(material: str, rng: np.random.Generator) -> dict[str, float]:
    """Every defect class the material allows, 1.5-3 % of the cells each (adatoms 1 %); a stated metal
    dopant (``WSe2+Mn``) on 6-10 % of the cells."""
    classes = [c for c in allowed_classes(material) if c != "perfect"]
    stated = stated_foreign_atom(parse_material(material), "M") is not None
    return {c: (0.01 if c == "adatom" else float(rng.uniform(*DOPED if stated and c == "dopant_M" else PLAIN)))
            for c in classes}


def dose_dir(root: Path, setting: str, material: str, dose: float) -> Path:
    return root / setting / material / f"dose_{dose:.0e}".replace("+", "")


def build(root: Path, settings: list[str], materials: list[str], threads: int, frozen_phonons: int) -> None:
    index_path = root / "index.csv"
    rows = {}
    if index_path.exists():
        with index_path.open() as f:
            for row in csv.DictReader(f):
                rows[(row["setting"], row["material"], row["dose"])] = row
    total = time.perf_counter()
    for setting in settings:
        spec = SETTINGS[setting]
        microscope = spec["microscope"]
        if frozen_phonons:
            microscope = MicroscopeSettings(**{**microscope.as_dict(), "frozen_phonons": frozen_phonons})
        for material in materials:
            dirs = [dose_dir(root, setting, material, d) for d in DOSES]
            if all((d / META_FILE).exists() for d in dirs):
                print(f"{setting} {material}: already written, skipped", flush=True)
                continue
            seed = seed_of(setting, material)
            rng = np.random.default_rng(seed)
            defects = defect_mix(material, rng)
            # near 0 or 90 degrees (the two lattice orientations of a hexagonal layer, 90 = 30 mod 60): the
            # orthogonal periodic supercell then hugs the field of view (a 45-degree view costs twice)
            rotation = float(90.0 * rng.integers(0, 2) + rng.uniform(-10.0, 10.0))
            imaging = ImagingParams(gamma=None, dose=None, microscope=microscope, background=float(rng.uniform(1e-3, 4e-3)),
                                    texture=float(rng.uniform(1e-4, 4e-4)), line_jitter=0.05)
            t0 = time.perf_counter()
            clean = simulate_multislice_twin(
                material, spec["shape"], spec["pixel_size"], rotation_deg=rotation, defects=defects,
                imaging=imaging, seed=seed, threads=threads,
                progress=lambda msg: print(f"  {setting} {material}: {msg}", flush=True),
            )
            seconds = time.perf_counter() - t0
            (root / setting / material).mkdir(parents=True, exist_ok=True)
            np.save(root / setting / material / "clean.npy", clean.image)
            for dose, folder in zip(DOSES, dirs):
                twin = with_dose(clean, dose, seed=seed_of(setting, material, dose))
                write_twin(twin, folder)
                rows[(setting, material, f"{dose:g}")] = {
                    "setting": setting, "material": material, "dose": f"{dose:g}",
                    "path": str(folder.relative_to(root)), "height": spec["shape"][0], "width": spec["shape"][1],
                    "pixel_size_A": spec["pixel_size"], "energy_kV": microscope.energy_kV,
                    "convergence_mrad": microscope.convergence_mrad,
                    "detector_inner_mrad": microscope.detector_inner_mrad,
                    "detector_outer_mrad": microscope.detector_outer_mrad,
                    "source_size_A": microscope.source_size_A, "frozen_phonons": microscope.frozen_phonons,
                    "rotation_deg": round(rotation, 3), "n_sites": len(twin.sites), "n_cells": len(twin.cells),
                    "defect_cells": int((twin.cells["class"] != "perfect").sum()), "seed": seed,
                    "seconds": round(seconds, 1), "dopant": _dopant_of(twin),
                }
            _write_index(index_path, rows)
            info = clean.extra["multislice"]
            print(f"{setting} {material}: {seconds / 60:.1f} min ({len(clean.cells)} cells, "
                  f"{info['atoms']} atoms, supercell {info['supercell_A'][1]:.0f} x {info['supercell_A'][0]:.0f} Å, "
                  f"PRISM interpolation {info['prism_interpolation']})", flush=True)
    print(f"library: {(time.perf_counter() - total) / 60:.1f} min this run; index {index_path}")


def refresh(root: Path) -> None:
    """Recompute the table-derived truth (cross_section_A2, the fast-twin equivalent imaging) of written images."""
    import pandas as pd

    from napari_stem_defects.io.atomic import atomic_write_text
    from napari_stem_defects.simulate.imaging import content_cross_section
    from napari_stem_defects.simulate.imaging_conditions import calibrated_imaging

    for meta_path in sorted(root.glob("*/*/dose_*/" + META_FILE)):
        meta = json.loads(meta_path.read_text())
        old = ImagingParams(**meta["imaging"])
        imaging = calibrated_imaging(old.microscope, **{k: getattr(old, k) for k in (
            "background", "background_variation", "background_length", "texture", "texture_length", "dose",
            "read_noise", "gain", "offset", "line_jitter", "drift")})
        sites_path = meta_path.parent / "sites.csv"
        sites = pd.read_csv(sites_path, keep_default_na=False)
        sites["cross_section_A2"] = [content_cross_section(sp, imaging) for sp in sites["species"].astype(str)]
        atomic_write_text(sites_path, sites.to_csv(index=False))
        meta["imaging"] = imaging.as_dict()
        atomic_write_text(meta_path, json.dumps(meta, indent=2))
        print(f"refreshed {meta_path.parent}")


def _dopant_of(twin) -> str:
    """The element on the twin's dopant_M metal sites ('' if it has none)."""
    sites = twin.sites
    species = sites.loc[(sites["sublattice"] == "M") & (sites["defect"] == "dopant_M"), "species"]
    return str(species.iloc[0]) if len(species) else ""


def _write_index(path: Path, rows: dict) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=INDEX_COLUMNS)
        writer.writeheader()
        for key in sorted(rows):
            writer.writerow(rows[key])
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="library folder (outside the repository)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--materials", nargs="+", default=list(MATERIALS),
                        help="materials, with a stated dopant where wanted (WSe2+Mn); 'dopants' stands for "
                             f"{' '.join(DOPANT_MATERIALS)}")
    parser.add_argument("--threads", type=int, default=1, help="FFT threads (default 1)")
    parser.add_argument("--frozen-phonons", type=int, default=0,
                        help="frozen-phonon configurations per image (default 0: static lattice)")
    parser.add_argument("--shape", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="override every setting's image shape (a quick trial)")
    parser.add_argument("--refresh", action="store_true",
                        help="only rewrite cross_section_A2 in sites.csv and the imaging in twin.json of the "
                             "images already written, from the current cross-section table")
    args = parser.parse_args()
    materials = [m for name in args.materials for m in (DOPANT_MATERIALS if name == "dopants" else [name])]
    if args.shape:
        for spec in SETTINGS.values():
            spec["shape"] = tuple(args.shape)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    (root / "library.json").write_text(json.dumps({
        "what": "napari-stem-defects multislice validation library (never train on it)",
        "settings": {k: {"microscope": v["microscope"].as_dict(), "pixel_size_A": v["pixel_size"],
                         "shape": list(v["shape"])} for k, v in SETTINGS.items()},
        "materials": materials, "doses": list(DOSES), "frozen_phonons": args.frozen_phonons,
        "script": "scripts/build_multislice_library.py",
    }, indent=2))
    if args.refresh:
        refresh(root)
        return
    build(root, args.settings, materials, args.threads, args.frozen_phonons)


if __name__ == "__main__":
    main()
