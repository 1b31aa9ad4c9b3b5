"""Tables and arrays through the annotation file's JSON encoding: lossless for every supported dtype."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_stem_defects.annotations.tables import decode_array, decode_table, encode_array, encode_table

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)
OBJECTS = st.one_of(st.none(), TEXT, st.booleans(), st.integers(-(2**62), 2**62), st.floats())
KINDS = ("float64", "float32", "int64", "int32", "uint8", "bool", "str", "string", "object", "category", "Int64")


@st.composite
def columns(draw, n: int) -> pd.Series:
    kind = draw(st.sampled_from(KINDS))
    if kind == "float64":
        return pd.Series(draw(st.lists(st.floats(), min_size=n, max_size=n)), dtype=np.float64)
    if kind == "float32":
        return pd.Series(draw(st.lists(st.floats(width=32), min_size=n, max_size=n)), dtype=np.float32)
    if kind in ("int64", "int32", "uint8"):
        info = np.iinfo(kind)
        values = draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=n, max_size=n))
        return pd.Series(np.array(values, dtype=kind))
    if kind == "bool":
        return pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    if kind in ("str", "string"):
        values = draw(st.lists(st.one_of(st.none(), TEXT), min_size=n, max_size=n))
        return pd.Series(values, dtype=kind)
    if kind == "object":
        values = draw(st.lists(OBJECTS, min_size=n, max_size=n))
        out = np.empty(n, dtype=object)
        out[:] = values
        return pd.Series(out, dtype=object)
    if kind == "Int64":
        values = draw(st.lists(st.one_of(st.none(), st.integers(-(2**62), 2**62)), min_size=n, max_size=n))
        return pd.Series(values, dtype="Int64")
    categories = draw(st.lists(TEXT, min_size=1, max_size=4, unique=True))
    values = draw(st.lists(st.one_of(st.none(), st.sampled_from(categories)), min_size=n, max_size=n))
    return pd.Series(pd.Categorical(values, categories=categories, ordered=draw(st.booleans())))


@st.composite
def frames(draw) -> pd.DataFrame:
    n = draw(st.integers(0, 8))
    names = draw(st.lists(st.text(min_size=1, max_size=5), max_size=6, unique=True))
    return pd.DataFrame({name: draw(columns(n)) for name in names}, index=pd.RangeIndex(n))


def _through_json(d: dict) -> dict:
    # strict JSON: no NaN/Infinity tokens in an encoded table or array
    return json.loads(json.dumps(d, allow_nan=False))


def _assert_same_signs(a: pd.DataFrame, b: pd.DataFrame) -> None:
    for column in a.columns:
        if a[column].dtype.kind == "f":  # -0.0 stays -0.0 (assert_frame_equal does not tell)
            x, y = a[column].to_numpy(), b[column].to_numpy()
            real = ~np.isnan(x)  # NaN is NaN: its sign and payload are not kept
            assert np.array_equal(np.signbit(x[real]), np.signbit(y[real]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_random_tables_round_trip_exactly(df):
    back = decode_table(_through_json(encode_table(df)))
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    assert list(back.dtypes) == list(df.dtypes)
    _assert_same_signs(back, df)


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(st.sampled_from([np.float64, np.float32, np.int64, np.int16, np.bool_]),
                  hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
def test_random_arrays_round_trip_exactly(a):
    back = decode_array(_through_json(encode_array(a)))
    assert back.dtype == a.dtype and back.shape == a.shape
    assert np.array_equal(back, a, equal_nan=a.dtype.kind == "f")
    if a.dtype.kind == "f":
        real = ~np.isnan(a)
        assert np.array_equal(np.signbit(back[real]), np.signbit(a[real]))


def test_the_encoding_is_readable_and_exact_for_awkward_floats():
    values = [0.1, 1 / 3, 5e-324, 1.7976931348623157e308, -0.0, math.nan, math.inf, -math.inf]
    small = [0.1, 1 / 3, 1e-45, 3.4e38, -0.0, math.nan, math.inf, -math.inf]
    df = pd.DataFrame({"v": values, "w": np.array(small, dtype=np.float32)})
    enc = encode_table(df)
    assert enc["columns"] == ["v", "w"] and enc["dtypes"] == ["float64", "float32"]
    assert enc["values"][0][:5] == values[:5] and enc["values"][0][5:] == [None, "inf", "-inf"]
    back = decode_table(_through_json(enc))
    assert back["v"].to_numpy().tobytes() == df["v"].to_numpy().tobytes()  # bit for bit (NaN payload aside)
    assert back["w"].dtype == np.float32
    np.testing.assert_array_equal(back["w"].to_numpy(), df["w"].to_numpy())


def test_object_columns_keep_none_nan_and_types_apart():
    col = np.empty(6, dtype=object)
    col[:] = [None, math.nan, "nan", 1, 1.0, True]
    df = pd.DataFrame({"o": col})
    back = decode_table(_through_json(encode_table(df)))
    got = back["o"].tolist()
    assert got[0] is None and isinstance(got[1], float) and math.isnan(got[1]) and got[2] == "nan"
    assert [type(v) for v in got[3:]] == [int, float, bool]


def test_categoricals_keep_categories_order_and_unused_ones():
    cat = pd.Categorical(["b", None, "a"], categories=["c", "b", "a"], ordered=True)
    df = pd.DataFrame({"k": cat, "n": [1, 2, 3]})
    enc = encode_table(df)
    assert enc["values"][0] == ["b", None, "a"]  # values, not codes
    assert enc["categories"]["k"]["values"] == ["c", "b", "a"] and enc["categories"]["k"]["ordered"] is True
    pd.testing.assert_frame_equal(decode_table(_through_json(enc)), df, check_exact=True)


def test_index_is_not_kept_and_empty_tables_keep_their_columns():
    df = pd.DataFrame({"a": [1.0, 2.0]}, index=[10, 20])
    pd.testing.assert_frame_equal(decode_table(encode_table(df)), df.reset_index(drop=True), check_exact=True)
    empty = pd.DataFrame({"a": pd.Series(dtype=float), "b": pd.Series(dtype=bool), "c": pd.Series(dtype="str")})
    pd.testing.assert_frame_equal(decode_table(_through_json(encode_table(empty))), empty, check_exact=True)
    rows_only = pd.DataFrame(index=pd.RangeIndex(3))
    assert decode_table(encode_table(rows_only)).shape == (3, 0)


def test_unsupported_and_damaged_input_raise_clear_errors():
    with pytest.raises(TypeError, match="complex"):
        encode_table(pd.DataFrame({"z": [1 + 2j]}))
    with pytest.raises(TypeError, match="dtype"):
        encode_array(np.array([1 + 2j]))
    enc = encode_table(pd.DataFrame({"a": [1.0, 2.0]}))
    enc["values"][0] = [1.0]
    with pytest.raises(ValueError, match="'a' has 1 values"):
        decode_table(enc)
    with pytest.raises(ValueError, match="columns"):
        decode_table({"values": []})
    bad = encode_table(pd.DataFrame({"a": [1.0]}))
    bad["values"][0] = ["one"]
    with pytest.raises(ValueError, match="'a'"):
        decode_table(bad)
    with pytest.raises(ValueError, match="shape"):
        decode_array({"dtype": "float64", "shape": [2, 2], "values": [[1.0, 2.0]]})
