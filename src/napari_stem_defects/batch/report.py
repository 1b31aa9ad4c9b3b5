"""``report.html``: one self-contained page per batch (figures embedded as base64 PNG), from a jinja2 template.

The page opens offline and mails as one file. It holds, for the dataset:
the files and their status, concentrations pooled per material with 95 %
intervals, every file's concentrations with error bars, the composition, the
calibration check, run times, warnings and the provenance (settings, model
hashes, versions); and per file: the image with its classified cells, its
concentrations, the intensity histograms with the fitted species, the
heatmaps, calibration, warnings and where its results are.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Template shipped with the package (``batch/templates``).
TEMPLATE = "report.html.j2"
#: Files given a section of their own (the dataset tables list every file).
MAX_FILE_SECTIONS = 300
_DEFECTS = ("V_X1", "V_X2", "V_M", "V_X1+V_M", "V_X2+V_M", "M_X", "X_M", "dopant_M", "sub_X", "adatom")


def write_report(out_dir: str | Path, records: Sequence[dict[str, Any]], info: dict[str, Any],
                 max_file_sections: int = MAX_FILE_SECTIONS) -> Path:
    """Render ``OUT/report.html`` from the files' records and ``batch.json``'s entries.

    Parameters
    ----------
    out_dir : str or Path
        The batch's output folder (the per-file figures are read from it).
    records : sequence of dict
        Every file's batch record, sorted by file.
    info : dict
        The entries of ``batch.json`` (settings, models, versions...).
    max_file_sections : int
        Files given a section of their own (failed files first, then in order).

    Returns
    -------
    Path
    """
    from ..io.atomic import atomic_write_text

    out = Path(out_dir)
    html = render_report(out, records, info, max_file_sections)
    path = out / "report.html"
    atomic_write_text(path, html)
    return path


def render_report(out: Path, records: Sequence[dict[str, Any]], info: dict[str, Any],
                  max_file_sections: int = MAX_FILE_SECTIONS) -> str:
    """The report's HTML (see :func:`write_report`)."""
    import jinja2

    from . import figures as fg
    from .dataset import dataset_table
    from ..provenance import now_iso

    table = dataset_table(records)
    by_file = {r.get("file"): r for r in records}
    anchors = {r.get("file"): f"file-{n}" for n, r in enumerate(records)}
    pooled = pooled_by_material(records)
    materials = _material_rows(records, pooled)
    dataset_figures = []
    for row in materials:
        material = row["material"]
        shown = [c["cls"] for c in row["classes"]]
        dataset_figures.append(("Pooled concentrations: " + material,
                                fg.dataset_pooled_png(material, pooled[material], shown),
                                "All files of this material together: counts and areas added, 95 % interval of "
                                "counting and classification."))
    dataset_figures += [
        ("Concentration per file", fg.dataset_concentrations_png(table, pooled),
         "Each file with its 95 % interval (counting and classification); the band is the pooled value."),
        ("Composition", fg.dataset_composition_png(table), "Share of each content on metal and chalcogen sites."),
        ("Calibration check", fg.dataset_calibration_png(table, float(info.get("settings", {}).get(
            "calibration_tolerance", 0.03))),
         "Relative difference between the pixel size used and the one the material's lattice implies."),
        ("Run time", fg.dataset_runtime_png(table), "Seconds per file against its size."),
    ]
    ordered = sorted(records, key=lambda r: (r.get("status") == "ok", str(r.get("file"))))
    sections = [_section(out, r, anchors[r.get("file")]) for r in ordered[:max_file_sections]]
    sections.sort(key=lambda s: s["file"])
    ok = sum(r.get("status") == "ok" for r in records)
    context = {
        "generated": now_iso(),
        "out_dir": str(out),
        "info": info,
        "counts": {"total": len(records), "ok": ok, "failed": len(records) - ok,
                   "analysed": info.get("files", {}).get("analysed_this_run"),
                   "kept": info.get("files", {}).get("kept_from_earlier_runs")},
        "materials": materials,
        "dataset_figures": [{"title": t, "png": _b64(p), "caption": c} for t, p, c in dataset_figures if p],
        "files": [_file_row(by_file[f], anchors[f]) for f in table["file"]],
        "failed": [{"file": r["file"], "anchor": anchors[r["file"]], "message": r.get("message", "")}
                   for r in records if r.get("status") != "ok"],
        "warnings": [{"file": r["file"], "anchor": anchors[r["file"]], "messages": r.get("warnings") or []}
                     for r in records if r.get("warnings")],
        "sections": sections,
        "truncated": max(0, len(records) - len(sections)),
        "provenance": _provenance(info),
    }
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_templates())), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["sci"] = sci
    return env.get_template(TEMPLATE).render(**context)


def _templates() -> Path:
    from importlib.resources import files

    return Path(str(files("napari_stem_defects.batch") / "templates"))


def sci(value: Any, digits: int = 3) -> str:
    """A number for people: ``1.23×10¹²``; '—' for missing values.

    Examples
    --------
    >>> sci(1.234e12), sci(0.5), sci(None), sci(float("nan"))
    ('1.23×10¹²', '0.5', '—', '—')
    """
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(x):
        return "—"
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.{digits}g}"
    exponent = int(math.floor(math.log10(abs(x))))
    mantissa = x / 10**exponent
    sup = str(exponent).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return f"{mantissa:.{digits - 1}f}×10{sup}"


def pooled_by_material(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Per material and class: concentration and 95 % interval over all its calibrated files (cm^-2)."""
    from ..cells.uncertainty import pooled_concentration

    groups: dict[str, list[dict]] = {}
    for r in records:
        totals = (r.get("report") or {}).get("totals")
        row = r.get("row") or {}
        if r.get("status") == "ok" and totals and row.get("pixel_size_source") != "none" and totals.get("n_cells"):
            groups.setdefault(row.get("material") or "?", []).append(totals)
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for material, totals in sorted(groups.items()):
        area_cm2 = [t["area_nm2"] * 1e-14 for t in totals]
        out[material] = {c: pooled_concentration([t.get("expected_count", {}).get(c, 0.0) for t in totals],
                                                  [t.get("count_variance", {}).get(c, 0.0) for t in totals], area_cm2)
                         for c in _DEFECTS}
    return out


def _material_rows(records: Sequence[dict], pooled: dict) -> list[dict[str, Any]]:
    rows = []
    for material, per_class in pooled.items():
        mine = [r for r in records if r.get("status") == "ok" and (r.get("row") or {}).get("material") == material
                and (r.get("report") or {}).get("totals")]
        counts = {c: sum(int(r["report"]["totals"]["counts"].get(c, 0)) for r in mine) for c in _DEFECTS}
        expected = {c: sum(float(r["report"]["totals"].get("expected_count", {}).get(c, 0.0)) for r in mine)
                    for c in _DEFECTS}
        rows.append({"material": material, "files": len(mine),
                     "cells": sum(int(r["report"]["totals"]["n_cells"]) for r in mine),
                     "area_nm2": sum(float(r["report"]["totals"]["area_nm2"]) for r in mine),
                     "classes": [{"cls": c, "count": counts[c], "conc": per_class[c][0], "lo": per_class[c][1],
                                  "hi": per_class[c][2]} for c in _DEFECTS if counts[c] or expected[c] >= 0.5]})
    return rows


def _file_row(record: dict, anchor: str) -> dict[str, Any]:
    row = record.get("row") or {}
    totals = (record.get("report") or {}).get("totals") or {}
    conc = totals.get("concentration_cm2", {})
    ci = totals.get("concentration_ci95_cm2", {})
    main = sorted((c for c in _DEFECTS if totals.get("counts", {}).get(c)),
                  key=lambda c: -totals["counts"][c])[:3]
    return {
        "file": record.get("file"), "anchor": anchor, "status": record.get("status"),
        "message": record.get("message", ""), "frames": row.get("frames"),
        "shape": f"{row['height_px']}×{row['width_px']}" if row.get("height_px") else "",
        "pixel": row.get("pixel_size_y_A"), "pixel_source": row.get("pixel_size_source", ""),
        "calibration": _calibration_text(row), "calibration_class": _calibration_class(row),
        "cells": row.get("n_cells"),
        "main": [{"cls": c, "count": totals["counts"][c], "conc": conc.get(c), "ci": ci.get(c, [None, None])}
                 for c in main],
        "warnings": len(record.get("warnings") or []), "run_time_s": record.get("run_time_s"),
    }


def _calibration_text(row: dict) -> str:
    if not row.get("calibration_checked"):
        return "not checked"
    diff = row.get("calibration_difference")
    if diff is None:
        return f"lattice: {row.get('calibration_measured_A', float('nan')):.4g} Å"
    return f"{100 * diff:.1f} % " + ("ok" if row.get("calibration_ok") else "off")


def _calibration_class(row: dict) -> str:
    if not row.get("calibration_checked") or row.get("calibration_ok") is None:
        return "muted"
    return "good" if row.get("calibration_ok") else "bad"


def _section(out: Path, record: dict, anchor: str) -> dict[str, Any]:
    """One file's section: figures read from its results folder, tables, warnings, provenance."""
    report = record.get("report") or {}
    totals = report.get("totals") or {}
    titles = {"overview": "Image and classified cells", "concentrations": "Concentrations (95 % interval)",
              "histograms": "Column intensities and fitted species", "heatmaps": "Defect heatmaps (first frame)"}
    figures = []
    for key, title in titles.items():
        rel = (report.get("figures") or {}).get(key)
        path = out / record["file"] / rel if rel else None
        if path is not None and path.is_file():
            figures.append({"title": title, "png": _b64(path.read_bytes()), "wide": key in ("overview", "heatmaps")})
    gallery = out / str(record.get("file")) / "class_averages.png"  # batch --strain (lattice.analysis)
    if record.get("file") and gallery.is_file():
        figures.append({"title": "Class-averaged defects (n, SNR)", "png": _b64(gallery.read_bytes()), "wide": False})
    classes = []
    for c in ("perfect", *_DEFECTS):
        count = totals.get("counts", {}).get(c)
        if count or totals.get("expected_count", {}).get(c, 0) >= 0.5:
            classes.append({"cls": c, "count": count, "expected": totals.get("expected_count", {}).get(c),
                            "count_ci": totals.get("count_ci95", {}).get(c, [None, None]),
                            "conc": totals.get("concentration_cm2", {}).get(c),
                            "ci": totals.get("concentration_ci95_cm2", {}).get(c, [None, None])})
    worker = record.get("worker") or {}
    return {
        "anchor": anchor, "file": record.get("file"), "name": report.get("name", record.get("file")),
        "status": record.get("status"), "message": record.get("message", ""),
        "shape": "×".join(str(n) for n in report.get("shape", [])), "figures": figures, "classes": classes,
        "n_cells": totals.get("n_cells"), "area_nm2": totals.get("area_nm2"),
        "calibration": report.get("calibration") or {}, "warnings": record.get("warnings") or [],
        "regions": report.get("heatmap_regions"), "outputs": report.get("outputs") or [],
        "provenance": {"source": record.get("path"), "content_sha256": record.get("content_sha256"),
                       "finished": record.get("finished"), "run_time_s": record.get("run_time_s"),
                       "worker": f"{worker.get('host', '?')} pid {worker.get('pid', '?')}, "
                                 f"{worker.get('threads', '?')} threads, peak {worker.get('peak_rss_mb', '?')} MB",
                       "results": record.get("file")},
    }


def _provenance(info: dict) -> list[tuple[str, str]]:
    settings = info.get("settings", {})
    models = info.get("models", {})
    versions = info.get("versions", {})
    executor = info.get("executor", {})
    return [
        ("software", str(info.get("software"))),
        ("command", str(info.get("command") or "—")),
        ("started / updated", f"{info.get('started')} / {info.get('updated', '—')}"),
        ("by", f"{info.get('created_by')} on {info.get('host')} ({info.get('platform')})"),
        ("run on", f"{executor.get('kind')}: {executor.get('workers')} worker(s), "
                   f"{executor.get('threads_per_file') or 'auto'} threads per file"),
        ("settings", ", ".join(f"{k}={v}" for k, v in settings.items())),
        ("settings fingerprint", str(info.get("settings_sha256"))),
        ("models", "; ".join(f"{role}: {m['name']} (sha256 {m['sha256'][:16]}…)" for role, m in models.items())
         or "none"),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v)),
    ]


def _b64(png: bytes | None) -> str:
    return "" if png is None else base64.b64encode(png).decode("ascii")


__all__ = ["MAX_FILE_SECTIONS", "TEMPLATE", "pooled_by_material", "render_report", "sci", "write_report"]
