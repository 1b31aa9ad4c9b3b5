"""JSON text of an annotation document: JSON-able copies of metadata, and a readable, compact layout.

:mod:`.tables` encodes tables and arrays losslessly; :func:`dumps_document`
lays out a whole document with each table column and each array row on one
line; :func:`jsonable` keeps what of some metadata can be written.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from typing import Any

import numpy as np

_DROP = object()


def jsonable(obj: Any) -> Any:
    """A JSON-able copy of ``obj``: numpy values as plain ones, paths as strings, the rest dropped.

    Dict entries whose value cannot be written are left out, list items
    become None; dict keys become strings.

    Examples
    --------
    >>> jsonable({"a": np.float32(0.5), "b": object(), 1: (np.int64(2), "x")})
    {'a': 0.5, '1': [2, 'x']}
    """
    out = _jsonable(obj)
    return None if out is _DROP else out


def _jsonable(obj: Any) -> Any:
    from ..io.atomic import json_default

    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    if isinstance(obj, (np.generic, np.ndarray)):
        try:
            return _jsonable(json_default(obj))
        except TypeError:
            return _DROP
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool, np.generic)) and k is not None:
                continue
            value = _jsonable(v)
            if value is not _DROP:
                out[str(k.item() if isinstance(k, np.generic) else k)] = value
        return out
    if isinstance(obj, (list, tuple)):
        return [None if (v := _jsonable(x)) is _DROP else v for x in obj]
    return _DROP


def same_json(a: Any, b: Any) -> bool:
    """Whether two values write the same JSON (after :func:`jsonable`), key order aside."""
    return json.dumps(jsonable(a), sort_keys=True) == json.dumps(jsonable(b), sort_keys=True)


def dumps_document(doc: Any) -> str:
    """JSON with indent 1, each table column and each array row on one line (readable, compact)."""
    raw: list[str] = []
    token = secrets.token_hex(4)

    def compact(value: Any) -> str:
        raw.append(json.dumps(value, separators=(",", ":"), allow_nan=True))
        return f"\x00{token}:{len(raw) - 1}\x00"

    def compact_rows(array: dict[str, Any]) -> str:
        text = json.dumps(array["values"], separators=(",", ":"), allow_nan=True)
        ndim = len(array["shape"])
        if ndim > 1 and not str(array["dtype"]).lstrip("<>|=").startswith("U"):  # no brackets inside values
            between = "]" * (ndim - 1) + "," + "[" * (ndim - 1)  # only found between rows
            text = text.replace(between, between.replace(",", ",\n    "))
            text = "[\n    " + text[1:-1] + "\n   ]"
        raw.append(text)
        return f"\x00{token}:{len(raw) - 1}\x00"

    def walk(obj: Any, key: str | None = None) -> Any:
        if isinstance(obj, dict):
            if {"dtype", "shape", "values"} <= obj.keys():  # an encoded array: one line per row
                return {**obj, "shape": compact(obj["shape"]), "values": compact_rows(obj)}
            if {"columns", "dtypes", "values"} <= obj.keys():  # an encoded table: one line per column
                return {**obj, "columns": compact(obj["columns"]), "dtypes": compact(obj["dtypes"]),
                        "values": [compact(v) for v in obj["values"]],
                        "categories": {k: {**c, "values": compact(c["values"])}
                                       for k, c in obj.get("categories", {}).items()}}
            return {k: walk(v, k) for k, v in obj.items()}
        if isinstance(obj, list) and key in ("shape", "scale", "units", "translate"):
            return compact(obj)
        return obj

    text = json.dumps(walk(doc), indent=1, allow_nan=True)
    pattern = re.compile(r'"\\u0000' + token + r':(\d+)\\u0000"')
    return pattern.sub(lambda m: raw[int(m.group(1))], text) + "\n"


__all__ = ["dumps_document", "jsonable", "same_json"]
