"""Table cells as text, a column at a time: the k-anonymity encoder, the renderer and the gate all
turn every cell of a release into a string, which a loop over 100,000 rows per column made a fifth
of a release's CPU. For a column of strings, integers or booleans the answer is `str(value)` of
each distinct value, found once; any other column (floats, mixed types) is left to the caller's
own per-cell rule, so the text of every cell is exactly what that rule gives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api import types


def column_texts(series: pd.Series, missing: str | None) -> np.ndarray | None:
    """`str(value)` of every cell (`missing` for NA) as an object array, for a column of strings,
    integers or booleans; None for any other column."""
    dtype = series.dtype
    if types.is_object_dtype(dtype) or isinstance(dtype, pd.StringDtype):
        if types.infer_dtype(series, skipna=True) not in ("string", "empty"):
            return None
        out = series.to_numpy(dtype=object, copy=True)
        out[series.isna().to_numpy()] = missing
        return out
    if types.is_integer_dtype(dtype) or types.is_bool_dtype(dtype):
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        texts = np.array([str(value) for value in np.asarray(uniques, dtype=object)] + [missing], dtype=object)
        return texts[codes]  # NA's code -1 takes the last entry
    return None
