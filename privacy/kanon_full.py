"""k-anonymity over every published column, by top-down specialization with local suppression.

The threat model (README, "Privacy: who we protect against"): the attacker may know EVERYTHING a
release could show about a victim -- a trafficker knows how they recruited, controlled and
exploited them -- and holds every earlier release. So k is counted over the whole published row:
every row's combination of published values (a suppressed `*` cell counts as a value) occurs at
least k times. An attacker who knows a victim's true row then matches either nothing or a whole
group of at least k rows, since a row is compatible with the victim exactly when its group is.

How detail is kept (sdcMicro's local suppression and CTDC's "redaction of outliers", done top
down so the most important facts keep the most detail):
1. start with one group: every row, every fact suppressed (`*`);
2. take the facts in importance order (`privacy.facts`), and for a quasi-identifier each level of
   its hierarchy from coarse to fine; split every group that reached the previous step by the
   fact's value at this step. Parts of at least k rows take the finer value; the rows of smaller
   parts stay together at the coarser value (their own group, which never refines this fact
   again). If that remainder has 1..k-1 rows it borrows rows: the fewest it needs from the largest
   part that can spare them, else the smallest part whole;
3. every group therefore has >= k rows at every step, and groups never share a published row
   (they differ in some fact: a value versus a coarser value or `*`), so every published row
   occurs >= k times. No row is withheld once the part holds >= k rows.
It is deterministic: the same rows in the same order give the same output (release ids are
content hashes). Cost: O(n log n) per step, about twenty steps for the CTDC view.

l-diversity on meanings (when asked): within each class of rows sharing their published
quasi-identifiers, a named sensitive fact must take >= l distinct values and none of its flags may
be 1 in every row that shows it (a class where everyone is `isSexualExploit = 1` is not diverse,
however many strings it spells that in). A failing class shows `*` for that fact in all its rows;
suppressing a column over a whole class only merges groups, so k still holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from privacy.cells import column_texts
from privacy.facts import Fact
from privacy.hierarchies import TOP

SUPPRESSED = TOP


class KFullError(ValueError):
    """The rows cannot be published under the guarantee (fewer than k of them)."""


@dataclass(frozen=True)
class LDiversityRule:
    """l-diversity on the meanings of sensitive facts (named by any of their columns)."""

    facts: tuple[str, ...]
    l: int


@dataclass
class Encoded:
    """A fact, integer-coded at every step: codes[s][row] and labels[s][code] (None = blank)."""

    fact: Fact
    codes: list[np.ndarray]
    labels: list[list[tuple[str | None, ...]]]  # per step: code -> one label per column


def cell_strings(series: pd.Series) -> np.ndarray:
    """A column as strings, None for NA; whole floats as integers (an Int64 year reads '2021')."""
    fast = column_texts(series, None)
    if fast is not None:
        return fast
    values = series.astype(object).to_numpy()
    missing = series.isna().to_numpy()
    out = np.empty(len(values), dtype=object)
    for i, (value, gone) in enumerate(zip(values, missing)):
        if gone:
            out[i] = None
        elif isinstance(value, (float, np.floating)) and float(value).is_integer():
            out[i] = str(int(value))
        else:
            out[i] = str(value)
    return out


def encode(table: pd.DataFrame, fact: Fact) -> Encoded:
    """Codes of every row at every step of the fact (a step's code is a refinement of the last's)."""
    codes: list[np.ndarray] = []
    labels: list[list[tuple[str | None, ...]]] = []
    if fact.hierarchy is not None:
        column = fact.columns[0]
        strings = cell_strings(table[column])
        distinct, inverse = np.unique(np.array([s if s is not None else "\x00" for s in strings], dtype=object), return_inverse=True)
        paths = {v: fact.hierarchy.path(v, column) for v in distinct if v != "\x00"}  # raises HierarchyError naming the value
        for level in fact.steps:
            names = [paths[v][level] if v != "\x00" else None for v in distinct]
            step_codes, uniques = pd.factorize(pd.Series(names, dtype=object), use_na_sentinel=True)
            uniques = list(uniques)
            if (step_codes < 0).any():
                step_codes = np.where(step_codes < 0, len(uniques), step_codes)
                uniques.append(None)
            codes.append(step_codes.astype(np.int64)[inverse])
            labels.append([(u,) for u in uniques])
        return Encoded(fact, codes, labels)
    cells = [cell_strings(table[c]) for c in fact.columns]
    keys = list(zip(*cells)) if cells else [()] * len(table)
    index: dict[tuple, int] = {}
    row_codes = np.fromiter((index.setdefault(key, len(index)) for key in keys), dtype=np.int64, count=len(keys))
    codes.append(row_codes)
    labels.append(list(index))
    return Encoded(fact, codes, labels)


def _compact(key: np.ndarray) -> np.ndarray:
    return np.unique(key, return_inverse=True)[1].astype(np.int64)


def specialize(encoded: Sequence[Encoded], n: int, k: int) -> np.ndarray:
    """Step reached per row and fact (-1 = suppressed), as an (n, facts) array. See the docstring."""
    if n < k:
        raise KFullError(f"{n} rows cannot form a group of k={k}")
    group = np.zeros(n, dtype=np.int64)
    reached = np.full((n, len(encoded)), -1, dtype=np.int16)
    for f, enc in enumerate(encoded):
        for s, codes in enumerate(enc.codes):
            eligible = np.flatnonzero(reached[:, f] == s - 1)
            if len(eligible) == 0:
                break
            card = int(codes.max()) + 2 if len(codes) else 1
            pair_key = group[eligible] * card + codes[eligible]
            pairs, inv, sizes = np.unique(pair_key, return_inverse=True, return_counts=True)
            inv = inv.astype(np.int64)
            small = sizes[inv] < k
            pair_group = pairs // card
            rem = np.bincount(group[eligible][small], minlength=int(group.max()) + 1)
            deficient = np.flatnonzero((rem > 0) & (rem < k))
            if len(deficient):
                order = np.argsort(inv, kind="stable")
                starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
                big_pairs = np.flatnonzero(sizes >= k)
                big_groups = pair_group[big_pairs]
                for g in deficient:
                    need = k - int(rem[g])
                    lo, hi = np.searchsorted(big_groups, g, "left"), np.searchsorted(big_groups, g, "right")
                    candidates = big_pairs[lo:hi]
                    if not len(candidates):  # cannot happen: a group has >= k rows
                        continue
                    cand_sizes = sizes[candidates]
                    largest = candidates[int(np.argmax(cand_sizes))]  # first of the largest: deterministic
                    if sizes[largest] >= k + need:
                        members = order[starts[largest]: starts[largest] + sizes[largest]]
                        small[members[-need:]] = True
                    else:
                        smallest = candidates[int(np.argmin(cand_sizes))]
                        small[order[starts[smallest]: starts[smallest] + sizes[smallest]]] = True
            # new groups: refined rows by (old group, value), the rest by old group alone
            new_key = np.empty(n, dtype=np.int64)
            offset = int(pairs.max()) + 1 if len(pairs) else 0
            new_key[:] = group + offset  # rows not eligible keep their group
            new_key[eligible] = np.where(small, group[eligible] + offset, pair_key)
            refined = eligible[~small]
            reached[refined, f] = s
            group = _compact(new_key)
    return reached


def render(table: pd.DataFrame, encoded: Sequence[Encoded], reached: np.ndarray, passthrough: Sequence[str]) -> pd.DataFrame:
    """The published table: each fact's labels at the step a row reached, `*` where suppressed."""
    out: dict[str, Any] = {}
    n = len(table)
    for f, enc in enumerate(encoded):
        columns = {c: np.full(n, SUPPRESSED, dtype=object) for c in enc.fact.columns}
        for s, codes in enumerate(enc.codes):
            rows = np.flatnonzero(reached[:, f] == s)
            if not len(rows):
                continue
            for j, c in enumerate(enc.fact.columns):
                lookup = np.array([label[j] for label in enc.labels[s]], dtype=object)
                columns[c][rows] = lookup[codes[rows]]
        out.update(columns)
    for c in passthrough:
        out[c] = cell_strings(table[c])
    ordered = [c for c in table.columns if c in out]
    for c in ordered:  # every NA as None, column by column (not a second copy of the whole table)
        missing = pd.isna(out[c])
        if missing.any():
            out[c] = np.where(missing, None, out[c])
    return pd.DataFrame({c: out[c] for c in ordered})


def diversify(published: pd.DataFrame, qi_columns: Sequence[str], facts: Sequence[Fact], rule: LDiversityRule) -> tuple[pd.DataFrame, int]:
    """Suppress each named fact in every quasi-identifier class where it is not l-diverse in meaning.
    Returns the table and the number of classes changed."""
    by_column = {c: f for f in facts for c in f.columns}
    changed = 0
    table = published.copy()
    keys = [table[c].fillna("\x00") for c in qi_columns] or [pd.Series(0, index=table.index)]
    classes = pd.Series(pd.MultiIndex.from_arrays(keys).factorize()[0] if len(qi_columns) > 1 else pd.factorize(keys[0])[0], index=table.index)
    for name in rule.facts:
        fact = by_column[name]
        shown = table[fact.columns[0]].ne(SUPPRESSED)
        fail = failing_classes(table, classes, fact.columns, shown, rule.l)
        if len(fail):
            rows = classes.isin(fail)
            for c in fact.columns:
                table.loc[rows, c] = SUPPRESSED
            changed += len(fail)
    return table, changed


def failing_classes(table: pd.DataFrame, classes: pd.Series, columns: Sequence[str], shown: pd.Series, l: int) -> np.ndarray:
    """Classes where the fact's shown values are not l-diverse in meaning (see the module docstring)."""
    sub = table.loc[shown, list(columns)].fillna("")
    cls = classes[shown]
    if sub.empty:
        return np.array([], dtype=np.int64)
    values = sub.astype(str).agg("\x1f".join, axis=1)
    distinct = values.groupby(cls).nunique()
    bad = set(distinct[distinct < l].index)
    for c in columns:
        col = sub[c]
        if set(col.unique()) <= {"0", "1", ""} and (col == "1").any():
            certain = (col == "1").groupby(cls).all()
            bad |= set(certain[certain].index)
    return np.array(sorted(bad), dtype=np.int64)


def protect_rows(
    table: pd.DataFrame,
    facts: Sequence[Fact],
    k: int,
    *,
    passthrough: Sequence[str] = (),
    l_diversity: LDiversityRule | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The published rows of `table` (one release part) and what was done, for the local preview.

    Only the facts' and `passthrough` columns of `table` are read (by position, never by index
    label), so the caller passes its rows without copying them into a narrower frame."""
    encoded = [encode(table, fact) for fact in facts]
    reached = specialize(encoded, len(table), k)
    published = render(table, encoded, reached, passthrough)
    classes_changed = 0
    if l_diversity is not None:
        qi_columns = [f.columns[0] for f in facts if f.hierarchy is not None]
        published, classes_changed = diversify(published, qi_columns, facts, l_diversity)
    return published, {"l_diversity_classes_suppressed": classes_changed}


__all__ = ["Encoded", "KFullError", "LDiversityRule", "SUPPRESSED", "cell_strings", "encode", "failing_classes", "protect_rows", "render", "specialize"]
