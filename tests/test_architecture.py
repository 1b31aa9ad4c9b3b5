"""The package's layers (docs/architecture.md): lower layers never import higher ones.

Every ``import`` of the package's own modules is read from the source (lazy imports inside functions
included, ``if TYPE_CHECKING:`` blocks excluded), and each module is placed in its layer by the longest
prefix of its dotted name in :data:`LAYERS`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_stem_defects"

#: Bottom to top; a module may import its own layer and those below. Keep in step with docs/architecture.md.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("vocabulary", ("", "vocabulary", "materials", "composition", "cell_convention", "image_values", "palette",
                    "provenance", "network_io", "tiling")),
    ("read", ("io", "calibration", "layer_calibration")),
    ("simulate", ("simulate",)),
    ("sites", ("columns",)),
    ("cells", ("cells",)),
    ("maps", ("heatmaps", "lattice", "image_check", "image_check_sites")),
    ("analysis", ("analyze", "analysis_result", "analysis_files", "analysis_heatmaps", "model_registry",
                  "annotations")),
    ("training and series", ("training", "dynamics", "batch")),
    ("interface", ("cli", "cli_parser", "cli_batch", "cli_consensus", "sample_data", "_widgets", "io.napari_reader")),
)


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of a module given by its dotted name inside the package."""
    best, depth = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix and module.startswith(prefix + ".")) or prefix == ""
            length = len(prefix.split(".")) if prefix else 0
            if matches and length > depth:
                best, depth = index, length
    if best is None:
        raise KeyError(module)
    return best


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def package_imports() -> list[tuple[str, str, int]]:
    """(importing module, imported module, line) for every import of the package's own modules."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _module_name(path)
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_lines(tree)
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.level:
                base = me.split(".") if me else []
                if not is_package:
                    base = base[:-1]
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [".".join(base + [a.name]) for a in node.names]
                out += [(me, name.strip("."), node.lineno) for name in names]
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for mod in mods:
                    if mod.startswith("napari_stem_defects"):
                        out.append((me, mod.removeprefix("napari_stem_defects").strip("."), node.lineno))
    return out


def test_the_import_reader_finds_the_known_imports():
    found = {(a, b) for a, b, _ in package_imports()}
    assert ("analyze", "analysis_files") in found            # a module-level relative import
    assert ("simulate.defects", "composition") in found      # two dots up
    assert ("cli", "io.mask_file") in found                  # a lazy import inside a function
    assert ("analysis_files", "analysis_result") not in found  # an `if TYPE_CHECKING:` import


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer_of(_module_name(path))


def test_the_layer_map_reads_longest_prefix_first():
    names = [name for name, _ in LAYERS]
    assert names[layer_of("io.rsciio_reader")] == "read"
    assert names[layer_of("io.napari_reader")] == "interface"
    assert names[layer_of("cells.cnn")] == "cells"
    assert names[layer_of("")] == "vocabulary"


def test_lower_layers_never_import_higher_ones():
    names = [name for name, _ in LAYERS]
    wrong = [f"{a} (layer {names[layer_of(a)]}) imports {b} (layer {names[layer_of(b)]}), line {line}"
             for a, b, line in package_imports() if layer_of(b) > layer_of(a)]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("layer", [name for name, _ in LAYERS])
def test_no_import_circle_between_packages_of_one_layer(layer):
    index = [name for name, _ in LAYERS].index(layer)

    def top(module: str) -> str:
        return module.split(".")[0]

    edges = {(top(a), top(b)) for a, b, _ in package_imports()
             if top(a) != top(b) and layer_of(a) == index and layer_of(b) == index}
    circles = sorted((a, b) for a, b in edges if (b, a) in edges)
    assert not circles, f"packages of the {layer} layer import each other: {circles}"
