"""The words every stage uses: cell classes, site defects, sublattices, phases.

The simulator's ground truth, the analysis, the networks, the files and the
viewer all speak this vocabulary, so a twin's truth and an analysis of it can
be compared name for name. It imports nothing of the package.

Examples
--------
>>> CELL_CLASSES[0], len(CELL_CLASSES)
('perfect', 11)
>>> PHASE_CODES["1T"], PHASE_OF_CODE[3]
(2, 'hole')
"""

from __future__ import annotations

#: Cell classes, in the order the networks output them and the tables list them.
CELL_CLASSES: tuple[str, ...] = (
    "perfect",
    "V_X1",
    "V_X2",
    "V_M",
    "V_X1+V_M",
    "V_X2+V_M",
    "M_X",
    "X_M",
    "dopant_M",
    "sub_X",
    "adatom",
)
#: Defect types a twin can be asked for (all cell classes but 'perfect').
DEFECT_TYPES: tuple[str, ...] = CELL_CLASSES[1:]
#: Class of a cell whose partner column lies outside the image or the analysed area: never a defect.
INCOMPLETE: str = "incomplete"
#: Per-site defect labels (the ``defect`` column of site tables).
SITE_DEFECTS: tuple[str, ...] = (
    "none", "V_X1", "V_X2", "V_M", "M_X", "X_M", "dopant_M", "sub_X", "adatom",
)
#: Species label of a site whose column is missing (analysis tables; the simulator writes '').
EMPTY: str = "empty"
#: Sublattices: metal site, chalcogen column, column on a hollow site (adatom).
SUBLATTICES: tuple[str, ...] = ("M", "X", "H")
#: Crystalline phases whose columns become sites: 2H (honeycomb, one X2 column per cell), 1T (1T or
#: 1T': three columns per cell, the two X atoms no longer overlap), and 'boundary': a band between
#: domains too thin to be a phase of its own, with columns on all three positions (the core of a
#: mirror twin boundary); all its cells are boundary cells.
PHASES: tuple[str, ...] = ("2H", "1T", "boundary")
#: Codes of the phase map (a napari Labels layer and ``phase_map.npy``): every pixel is one of these.
PHASE_CODES: dict[str, int] = {"none": 0, "2H": 1, "1T": 2, "hole": 3, "amorphous": 4, "masked": 5, "boundary": 6}
#: Name of each phase-map code.
PHASE_OF_CODE: dict[int, str] = {code: name for name, code in PHASE_CODES.items()}
