"""Guards against the few parser paths whose time grows without bound on a damaged file.

rosettasciio's DigitalMicrograph reader builds the definition of a tag
structure one field at a time, as many fields as the file says (and by tuple
concatenation, so in quadratic time): one damaged count in the tag tree of a
5 MB DM3 file kept it busy for minutes. :func:`harden` replaces that one
method by the same reading with a bound on the count (a DM structure has a
handful of fields: 2 for a complex number, 3-4 for a colour); a larger count
raises ``OSError`` at once, which the reader reports as a damaged file.

The replacement reads exactly what the original reads (a length, the field
count, then a length and an encoded type per field), so intact files are
parsed identically. It is installed once, when the plugin first reads a
DM3/DM4 file, and only if rosettasciio still has the method it replaces.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_DM_STRUCT_FIELDS", "harden"]

#: Most fields a DigitalMicrograph tag structure may declare.
MAX_DM_STRUCT_FIELDS = 4096


def _parse_struct_definition(self: Any) -> tuple:
    """rosettasciio's ``parse_struct_definition`` with a bound on the number of fields."""
    self.read_l_or_q(self.f, "big")  # a length, unused
    nfields = self.read_l_or_q(self.f, "big")
    if not 0 <= nfields <= MAX_DM_STRUCT_FIELDS:
        raise OSError(f"a tag structure declares {nfields} fields (at most {MAX_DM_STRUCT_FIELDS} are "
                      "expected); the tag tree is damaged")
    definition = []
    for _ in range(nfields):
        self.read_l_or_q(self.f, "big")  # a length, unused
        definition.append(self.read_l_or_q(self.f, "big"))
    return tuple(definition)


def harden(reader: str) -> None:
    """Install the guard for the rosettasciio module ``reader`` (only ``rsciio.digitalmicrograph`` has one).

    Parameters
    ----------
    reader : str
        The module :mod:`.rsciio_reader` is about to use.
    """
    if reader != "rsciio.digitalmicrograph":
        return
    try:
        from rsciio.digitalmicrograph import _api
    except ImportError:  # pragma: no cover - layout changed: nothing to guard
        return
    cls = getattr(_api, "DigitalMicrographReader", None)
    if cls is not None and hasattr(cls, "parse_struct_definition") \
            and cls.parse_struct_definition is not _parse_struct_definition:
        cls.parse_struct_definition = _parse_struct_definition
