"""Reading an annotation file's bytes safely: strict JSON, bounded nesting, bounded size.

The first of the three layers of checks described in :mod:`.schema`: a file
too large, not UTF-8, not JSON, with a key twice in one object (the last one
would win in silence), nested deeper than the format needs, or with a number
too long to convert is refused with a ``ValueError`` that says why.
"""

from __future__ import annotations

import json
from typing import Any

#: Deepest nesting of JSON containers accepted (the format needs about 8).
MAX_DEPTH = 64


class _DuplicateKey(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"the key {key!r} appears twice in one object (which one is meant?)")
        out[key] = value
    return out


def _depth(obj: Any) -> int:
    """Nesting depth of JSON containers (iterative: never a RecursionError)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, level + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def parse_json(raw: bytes) -> Any:
    """Parse an annotation file's bytes as strict JSON.

    Raises
    ------
    ValueError
        Not UTF-8, not JSON, a key twice in one object, nested deeper than
        :data:`MAX_DEPTH`, or a number too long to convert.

    Examples
    --------
    >>> parse_json(b'{"a": [1, 2.5, null]}')
    {'a': [1, 2.5, None]}
    >>> parse_json(b'{"a": 1, "a": 2}')
    Traceback (most recent call last):
    ...
    ValueError: the key 'a' appears twice in one object (which one is meant?)
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid JSON (not UTF-8 text: {exc})") from None
    try:
        doc = json.loads(text, object_pairs_hook=_pairs)
    except _DuplicateKey as exc:
        raise ValueError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"not a readable annotation file: containers nested far deeper than the {MAX_DEPTH} "
                         "levels the format uses") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise ValueError(f"not a readable annotation file: {exc}") from None
    if _depth(doc) > MAX_DEPTH:
        raise ValueError(f"not a readable annotation file: containers nested deeper than the {MAX_DEPTH} "
                         "levels the format uses")
    return doc


def max_file_bytes() -> int:
    """The largest annotation file read (bytes): an eighth of the reader's memory budget, at least 64 MiB."""
    from ..io.limits import memory_budget

    return max(64 << 20, memory_budget() // 8)


def check_size(size: int) -> None:
    """Refuse a file too large to be an annotation file (parsing it could exhaust memory)."""
    limit = max_file_bytes()
    if size > limit:
        raise ValueError(f"{size / 2**20:.0f} MiB is far larger than any annotation file this plugin writes or "
                         f"can read safely here ({limit / 2**20:.0f} MiB); it is not one")


__all__ = ["MAX_DEPTH", "check_size", "max_file_bytes", "parse_json"]
