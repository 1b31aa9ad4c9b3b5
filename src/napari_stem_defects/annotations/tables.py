"""Tables and arrays as plain JSON values, losslessly and readably.

A table is written column by column::

    {"n_rows": 2,
     "columns": ["y_px", "species", "verified"],
     "dtypes": ["float64", "str", "bool"],
     "values": [[10.25, null], ["Mo", "S2"], [true, false]],
     "categories": {}}

Rules, per column dtype:

* **floats** (float16/32/64): numbers written with Python's ``repr`` (the
  shortest string that reads back to the same value, so float64 is exact);
  NaN as ``null``, infinities as the strings ``"inf"`` and ``"-inf"``. A
  float32 column is restored as float32 (every float32 is exact as float64).
* **integers** and **bools**: JSON integers and ``true``/``false``.
* **strings** (pandas ``str``/``string`` dtypes): strings, missing as ``null``.
* **object** columns: strings, bools, integers and floats as themselves,
  ``None`` as ``null``; a float that is NaN or infinite as ``{"float": "nan"}``
  (``"inf"``, ``"-inf"``), so it is not confused with ``None`` or a string;
  numpy scalars become Python ones; any other object is written as its
  ``str`` (the only lossy case).
* **categoricals**: the values themselves (missing as ``null``), and in
  ``categories[column]`` the categories (``{"dtype", "values", "ordered"}``).
* nullable pandas dtypes (``Int64``, ``boolean``, ``Float64``...): values,
  missing as ``null``.

The index is not kept (the decoded table has a fresh RangeIndex). An array is
``{"dtype", "shape", "values"}`` with the same rules for its elements.

Examples
--------
>>> import pandas as pd
>>> df = pd.DataFrame({"a": [0.1, float("nan")], "b": ["x", None]}).astype({"b": object})
>>> decode_table(encode_table(df)).equals(df)
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["decode_array", "decode_table", "encode_array", "encode_table"]

_INF = {"inf": math.inf, "-inf": -math.inf}


def _float_out(v: float) -> float | str | None:
    """One float as JSON: itself, None for NaN, 'inf'/'-inf'."""
    if math.isfinite(v):
        return v
    if math.isnan(v):
        return None
    return "inf" if v > 0 else "-inf"


def _float_in(v: Any) -> float:
    if v is None:
        return math.nan
    if isinstance(v, str):
        try:
            return _INF[v]
        except KeyError:
            raise ValueError(f"not a float: {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"not a float: {v!r:.40}")
    return float(v)


def _exact(values: list, dtype: np.dtype) -> None:
    """Integers (or bools) only, each within the dtype's range: nothing is truncated or wrapped on decoding."""
    if dtype.kind == "b":
        if not all(type(v) is bool for v in values):
            bad = next(v for v in values if type(v) is not bool)
            raise ValueError(f"{bad!r:.40} is not true or false")
        return
    if not all(type(v) is int for v in values):
        bad = next(v for v in values if type(v) is not int)
        raise ValueError(f"{bad!r:.40} is not a whole number (a {dtype} column)")
    if values:
        info = np.iinfo(dtype)
        lo, hi = min(values), max(values)
        if lo < info.min or hi > info.max:
            raise ValueError(f"{lo if lo < info.min else hi} does not fit in {dtype}")


def _floats_out(values: np.ndarray) -> list:
    out = values.astype(np.float64, copy=False).tolist()
    if not np.isfinite(values).all():
        out = [_float_out(v) for v in out]
    return out


def _object_out(v: Any) -> Any:
    """One element of an object column as a JSON value (see the module notes)."""
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, np.generic):
        v = v.item()
        if not isinstance(v, (bool, int, float, str)):
            return str(v)
    if isinstance(v, bool) or isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
    if v is pd.NA:
        return None
    return str(v)


def _object_in(v: Any) -> Any:
    if isinstance(v, dict):
        text = v.get("float")
        if text == "nan":
            return math.nan
        if text in _INF:
            return _INF[text]
        raise ValueError(f"unknown tagged value {v!r}")
    return v


def _dtype_name(dtype: Any) -> str:
    """The dtype's name as written: numpy names, 'str', 'string[python]', 'category', 'Int64'..."""
    if isinstance(dtype, pd.StringDtype):
        if dtype.na_value is pd.NA:
            return f"string[{dtype.storage}]"
        return "str" if dtype.storage == "python" else f"str[{dtype.storage}]"
    return str(dtype)


def _dtype_from_name(name: str) -> Any:
    if name == "str" or name.startswith("str["):
        storage = name[4:-1] if name.startswith("str[") else "python"
        return pd.StringDtype(storage=storage, na_value=np.nan)
    return pd.api.types.pandas_dtype(name)


def _encode_values(values: Any, dtype: Any) -> list:
    """Elements of a column (Series values or ndarray) of ``dtype`` as JSON values."""
    if isinstance(dtype, np.dtype):
        arr = np.asarray(values)
        if dtype.kind == "f":
            return _floats_out(arr)
        if dtype.kind in "iub":
            return arr.tolist()
        if dtype.kind == "U":
            return arr.tolist()
        if dtype.kind == "O":
            return [_object_out(v) for v in arr.tolist()]
        raise TypeError(f"cannot write a column of dtype {dtype} (supported: floats, integers, bools, "
                        "strings, objects, categoricals)")
    if isinstance(dtype, pd.StringDtype):
        return pd.Series(pd.array(values, dtype=dtype)).to_numpy(dtype=object, na_value=None).tolist()
    # nullable extension dtypes (Int64, boolean, Float64...)
    out = []
    for v in pd.array(values, dtype=dtype):
        if v is pd.NA:
            out.append(None)
        else:
            out.append(_object_out(v.item() if isinstance(v, np.generic) else v))
    return out


def _decode_values(values: list, dtype: Any) -> Any:
    if isinstance(dtype, np.dtype):
        if dtype.kind == "f":
            return np.array([_float_in(v) for v in values], dtype=np.float64).astype(dtype)
        if dtype.kind in "iub":
            _exact(values, dtype)
            return np.array(values, dtype=dtype).reshape(len(values))
        if dtype.kind == "U":
            if not all(isinstance(v, str) for v in values):
                raise ValueError("a text column holds a value that is not text")
            return np.array(values, dtype=dtype).reshape(len(values))
        if dtype.kind == "O":
            out = np.empty(len(values), dtype=object)
            out[:] = [_object_in(v) for v in values]
            return out
        raise TypeError(f"cannot read a column of dtype {dtype}")
    if isinstance(dtype, pd.StringDtype):
        return pd.array([dtype.na_value if v is None else v for v in values], dtype=dtype)
    return pd.array([pd.NA if v is None else _object_in(v) for v in values], dtype=dtype)


def encode_table(df: pd.DataFrame) -> dict[str, Any]:
    """A DataFrame as a JSON-able dict, losslessly (see the module notes for each dtype).

    Parameters
    ----------
    df : DataFrame
        Any table of float, integer, bool, string, object, categorical or
        nullable columns. The index is not written.

    Returns
    -------
    dict
        ``{"n_rows", "columns", "dtypes", "values", "categories"}``.

    Raises
    ------
    TypeError
        A column of a dtype not listed above (complex, datetime...).
    """
    columns, dtypes, values, categories = [], [], [], {}
    for k in range(df.shape[1]):
        name = df.columns[k]
        col = df.iloc[:, k]
        columns.append(name.item() if isinstance(name, np.generic) else name)
        dtype = col.dtype
        if isinstance(dtype, pd.CategoricalDtype):
            cats = dtype.categories
            categories[str(name)] = {"dtype": _dtype_name(cats.dtype), "ordered": bool(dtype.ordered),
                                     "values": _encode_values(cats.to_numpy(), cats.dtype)}
            codes = col.cat.codes.to_numpy()
            cat_values = categories[str(name)]["values"]
            values.append([None if c < 0 else cat_values[c] for c in codes.tolist()])
            dtypes.append("category")
            continue
        dtypes.append(_dtype_name(dtype))
        values.append(_encode_values(col.to_numpy() if isinstance(dtype, np.dtype) else col.array, dtype))
    return {"n_rows": int(len(df)), "columns": columns, "dtypes": dtypes, "values": values,
            "categories": categories}


def decode_table(d: dict[str, Any]) -> pd.DataFrame:
    """The DataFrame :func:`encode_table` wrote, with its dtypes, on a RangeIndex.

    Parameters
    ----------
    d : dict
        Output of :func:`encode_table` (possibly through JSON).

    Returns
    -------
    DataFrame

    Raises
    ------
    ValueError
        Missing keys, lengths that disagree, or values that do not fit their dtype.
    """
    try:
        columns, dtypes, values = list(d["columns"]), list(d["dtypes"]), list(d["values"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"a table needs 'columns', 'dtypes' and 'values' ({exc!r})") from None
    if not (len(columns) == len(dtypes) == len(values)):
        raise ValueError(f"table of {len(columns)} columns with {len(dtypes)} dtypes and {len(values)} value lists")
    n_rows = d.get("n_rows", len(values[0]) if values else 0)
    if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 0:
        raise ValueError(f"n_rows must be a whole number, not {n_rows!r:.40}")
    n_rows = int(n_rows)
    if len(set(map(str, columns))) < len(columns):
        raise ValueError("a column name appears twice")
    categories = d.get("categories") or {}
    data = {}
    for k, (name, dtype_name, vals) in enumerate(zip(columns, dtypes, values, strict=True)):
        if len(vals) != n_rows:
            raise ValueError(f"column {name!r} has {len(vals)} values, the table {n_rows} rows")
        try:
            if dtype_name == "category":
                spec = categories[str(name)]
                cat_dtype = _dtype_from_name(spec["dtype"])
                cats = pd.Index(_decode_values(list(spec["values"]), cat_dtype), dtype=cat_dtype)
                dtype = pd.CategoricalDtype(cats, ordered=bool(spec.get("ordered", False)))
                cat_values = _decode_values([v for v in vals if v is not None], cat_dtype)
                codes = np.full(n_rows, -1, dtype=np.int64)
                present = np.array([v is not None for v in vals], bool)
                codes[present] = cats.get_indexer(cat_values)
                if (codes[present] < 0).any():
                    raise ValueError("a value is not one of the categories")
                data[k] = pd.Categorical.from_codes(codes, dtype=dtype)
            else:
                dtype = _dtype_from_name(dtype_name)
                data[k] = pd.Series(_decode_values(vals, dtype), dtype=dtype)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise ValueError(f"column {name!r} ({dtype_name}): {exc}") from None
    df = pd.DataFrame({k: pd.Series(v, copy=False) for k, v in data.items()}, index=pd.RangeIndex(n_rows))
    df.columns = pd.Index(columns) if columns else df.columns
    return df


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """An array as ``{"dtype", "shape", "values"}`` (nested lists; floats as in tables), exactly.

    Examples
    --------
    >>> encode_array(np.array([[1.5, np.nan]]))
    {'dtype': 'float64', 'shape': [1, 2], 'values': [[1.5, None]]}
    """
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiubU":
        raise TypeError(f"cannot write an array of dtype {arr.dtype} (supported: floats, integers, bools, strings)")
    if arr.dtype.kind in "iub" or (arr.dtype.kind == "f" and np.isfinite(arr).all()):
        values = arr.astype(np.float64, copy=False).tolist() if arr.dtype.kind == "f" else arr.tolist()
    else:
        flat = np.empty(arr.size, dtype=object)
        flat[:] = _encode_values(arr.ravel(), arr.dtype)
        values = flat.reshape(arr.shape).tolist()
    return {"dtype": arr.dtype.str if arr.dtype.kind == "U" else str(arr.dtype), "shape": list(arr.shape),
            "values": values}


def decode_array(d: dict[str, Any]) -> np.ndarray:
    """The array :func:`encode_array` wrote, with its dtype and shape.

    Raises
    ------
    ValueError
        Missing keys or values that do not fill the shape.
    """
    try:
        dtype = np.dtype(d["dtype"])
        shape = tuple(d["shape"])
        values = d["values"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"an array needs 'dtype', 'shape' and 'values' ({exc!r})") from None
    if not all(type(s) is int and s >= 0 for s in shape):
        raise ValueError(f"an array's shape must be whole numbers, not {list(shape)!r:.80}")
    flat = _flatten(values, shape)
    return np.asarray(_decode_values(flat, dtype), dtype=dtype).reshape(shape)


def _flatten(values: Any, shape: tuple[int, ...]) -> list:
    """The elements of nested lists that must have exactly ``shape`` (no ragged rows)."""
    if not shape:
        return [values]
    out = [values]
    for level, n in enumerate(shape):
        if not all(isinstance(sub, list) and len(sub) == n for sub in out):
            raise ValueError(f"the values do not fill an array of shape {shape} (level {level} should hold {n})")
        out = [v for sub in out for v in sub]
    return out
