"""Generalization hierarchies, loaded from data (`mappings/schema/hierarchies/`) or from the config.

A hierarchy says, for each value of a quasi-identifier, what it becomes at each level of
generalization: level 0 is the value itself, the top level is `*` (nothing left). k-anonymity
walks the lattice of these levels, so two properties matter and are checked on load:

- levels nest: values that share a label at level h share one at level h+1. Without it a step up
  could split a group, and the search's pruning by monotonicity would be wrong;
- every value in the data has a place: an unknown value raises `HierarchyError` naming column and
  value (`citizenship: value 'XX' has no place in hierarchy country`), instead of being published
  ungeneralized.

Missing values: NA stays NA at every level below the top (an unknown is a value of its own, and
publishing "unknown" says nothing more than the data did); at the top it becomes `*` like the rest.

Kinds (the same in the packaged YAML files and in `release.hierarchies` of a job config):

    type: interval      # integers; `levels` is a list of cut-point lists (or {name, cuts, labels})
    type: explicit      # `levels` is a list of {value: parent} maps, or `table: FILE.csv`, or `values`
    type: ordered       # `values` in order; `levels` is a list of group sizes, each a multiple of the last
    type: flat          # any value -> `*` (the fallback for a quasi-identifier without a hierarchy)

Labels: interval bands are "lo{sep}hi" ("18--20", "2020-2021"), the last band "lo+" when
`open_ended`; a single-value band is the value. Level-0 labels are the values as strings.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable, Mapping, Sequence

import yaml

TOP = "*"
BUILTIN = ("age", "country", "gender", "majority", "year", "region", "perpetrator_age")
# Which packaged hierarchy generalizes which release-view column, when the view does not say.
DEFAULT_COLUMN_HIERARCHIES = {
    "yearOfRegistration": "year",
    "gender": "gender",
    "ageBroad": "age",
    "majorityStatus": "majority",
    "citizenship": "country",
    "CountryOfExploitation": "country",
}


class HierarchyError(ValueError):
    """A hierarchy that cannot be used, or a value that has no place in one."""


@dataclass(frozen=True)
class Hierarchy:
    """One generalization hierarchy.

    `paths` maps each known level-0 value (a string) to its labels at levels 1..height-1; the top
    level is always `*`. `interval` hierarchies instead compute labels from cut points, since their
    domain (all integers in [lower, upper]) is too large to list.
    """

    name: str
    level_names: tuple[str, ...]  # level 0 .. top; the last is "*"
    source: str = ""
    paths: Mapping[str, tuple[str, ...]] | None = None  # explicit: value -> labels at 1..height-1
    any_value: bool = False  # flat: every value is known
    cuts: tuple[tuple[int, ...], ...] = ()  # interval: cut points per level 1..height-1
    labels: tuple[tuple[str, ...] | None, ...] = ()  # interval: optional names of bands per level
    lower: int = 0
    upper: int = 0
    separator: str = "--"
    open_ended: bool = False
    _interval: bool = field(default=False, repr=False)

    @property
    def height(self) -> int:
        """Index of the top level (`*`)."""
        return len(self.level_names) - 1

    def path(self, value: str, column: str = "") -> tuple[str, ...]:
        """Labels of a level-0 value at every level 0..height. NA is handled by the caller."""
        if self._interval:
            middle = self._interval_path(value, column)
        elif self.any_value:
            middle = ()
        else:
            assert self.paths is not None
            if value not in self.paths:
                raise self._no_place(value, column)
            middle = self.paths[value]
        return (value, *middle, TOP)

    def table(self, values: Iterable[str], column: str = "") -> dict[str, tuple[str, ...]]:
        """`path` for each of `values`; raises HierarchyError naming the first value with no place."""
        return {value: self.path(value, column) for value in values}

    def validate(self, values: Iterable[str], column: str) -> None:
        """Raise HierarchyError if a value (non-NA, as string) has no path to `*`."""
        for value in values:
            self.path(value, column)

    def _no_place(self, value: str, column: str) -> HierarchyError:
        where = f"{column}: " if column else ""
        return HierarchyError(f"{where}value {value!r} has no place in hierarchy {self.name}")

    def _interval_path(self, value: str, column: str) -> tuple[str, ...]:
        number = _as_integer(value)
        if number is None or not (self.lower <= number <= self.upper):
            raise self._no_place(value, column)
        out = []
        for cuts, names in zip(self.cuts, self.labels):
            i = _band(cuts, number)
            if i < 0:
                raise self._no_place(value, column)
            if names is not None:
                out.append(names[i])
                continue
            lo = cuts[i]
            if i + 1 < len(cuts):
                hi = cuts[i + 1] - 1
            elif self.open_ended:
                out.append(f"{lo}+")
                continue
            else:
                hi = self.upper
            out.append(str(lo) if lo == hi else f"{lo}{self.separator}{hi}")
        return tuple(out)


def _band(cuts: tuple[int, ...], number: int) -> int:
    """Index of the band holding `number` (the last cut <= number), -1 below the first cut."""
    lo, hi = 0, len(cuts)
    while lo < hi:
        mid = (lo + hi) // 2
        if cuts[mid] <= number:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


def _as_integer(value: str) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number != int(number):
        return None
    return int(number)


def flat_hierarchy(name: str = "flat") -> Hierarchy:
    """value -> `*`, accepting any value: for a quasi-identifier that has no hierarchy of its own."""
    return Hierarchy(name=name, level_names=("value", TOP), source="connector fallback", any_value=True)


@lru_cache(maxsize=None)
def load_builtin(name: str) -> Hierarchy:
    """A packaged hierarchy by name (see BUILTIN), validated."""
    if name not in BUILTIN:
        raise HierarchyError(f"no packaged hierarchy named {name!r}; packaged: {', '.join(BUILTIN)}")
    folder = resources.files("mappings").joinpath("schema", "hierarchies")
    spec = yaml.safe_load(folder.joinpath(f"{name}.yaml").read_text(encoding="utf-8"))
    if "table" in spec:
        text = folder.joinpath(spec["table"]).read_text(encoding="utf-8")
        spec = {**spec, "rows": list(csv.reader(text.splitlines()))}
    return hierarchy_from_spec(spec, where=f"hierarchies/{name}.yaml")


def hierarchy_from_spec(spec: Mapping[str, Any], where: str = "hierarchy") -> Hierarchy:
    """Build and validate a hierarchy from its YAML/config form (see the module docstring)."""
    if not isinstance(spec, Mapping):
        raise HierarchyError(f"{where}: a hierarchy must be a mapping with a `type`")
    if "use" in spec:  # a config may point a column at a packaged hierarchy: {use: country}
        return load_builtin(str(spec["use"]))
    kind = spec.get("type")
    name = str(spec.get("name", where))
    value_level = str(spec.get("value_level", "value"))
    source = str(spec.get("source", where))
    if kind == "interval":
        return _interval(spec, name, value_level, source, where)
    if kind == "explicit":
        return _explicit(spec, name, value_level, source, where)
    if kind == "ordered":
        return _ordered(spec, name, value_level, source, where)
    if kind == "flat":
        return Hierarchy(name=name, level_names=(value_level, TOP), source=source, any_value=True)
    raise HierarchyError(f"{where}: type must be interval, explicit, ordered or flat, not {kind!r}")


def _interval(spec: Mapping[str, Any], name: str, value_level: str, source: str, where: str) -> Hierarchy:
    levels = [level if isinstance(level, Mapping) else {"cuts": level} for level in spec.get("levels", [])]
    first = levels[0].get("cuts", [0]) if levels else [0]
    lower = int(spec.get("lower", min(first)))
    upper = int(spec.get("upper", 2**62))  # no upper bound unless the spec gives one
    anchor = int(spec.get("anchor", lower))
    all_cuts: list[tuple[int, ...]] = []
    names: list[str] = [value_level]
    band_labels: list[tuple[str, ...] | None] = []
    for i, level in enumerate(levels, 1):
        cuts = _level_cuts(level, anchor, lower, upper, where, i)
        if not cuts or cuts[0] > lower:
            raise HierarchyError(f"{where}: level {i}: the first cut must be <= lower ({lower}) so every value has a band")
        labels = level.get("labels")
        if labels is not None:
            labels = tuple(str(label) for label in labels)
            if len(labels) != len(cuts):
                raise HierarchyError(f"{where}: level {i}: {len(labels)} labels for {len(cuts)} bands")
        if all_cuts and not set(cuts) - {cuts[0]} <= set(all_cuts[-1]):
            extra = sorted(set(cuts) - set(all_cuts[-1]) - {cuts[0]})
            raise HierarchyError(f"{where}: level {i} does not nest in level {i - 1}: cut points {extra} split its bands")
        all_cuts.append(cuts)
        band_labels.append(labels)
        names.append(str(level.get("name", f"level {i}")))
    names.append(TOP)
    return Hierarchy(
        name=name,
        level_names=tuple(names),
        source=source,
        cuts=tuple(all_cuts),
        labels=tuple(band_labels),
        lower=lower,
        upper=upper,
        separator=str(spec.get("separator", "--")),
        open_ended=bool(spec.get("open_ended", "upper" not in spec)),
        _interval=True,
    )


def _level_cuts(level: Mapping[str, Any], anchor: int, lower: int, upper: int, where: str, i: int) -> tuple[int, ...]:
    if "cuts" in level:
        cuts = tuple(int(c) for c in level["cuts"])
    elif "period" in level:
        period = int(level["period"])
        offsets = [int(o) for o in level.get("offsets", [0])]
        if period <= 0 or any(not 0 <= o < period for o in offsets):
            raise HierarchyError(f"{where}: level {i}: offsets must lie in [0, period)")
        cuts = tuple(start + o for start in range(anchor, upper + 1, period) for o in sorted(offsets) if start + o <= upper)
    else:
        raise HierarchyError(f"{where}: level {i}: give `cuts` or `period`")
    if list(cuts) != sorted(set(cuts)):
        raise HierarchyError(f"{where}: level {i}: cut points must be strictly increasing")
    return cuts


def _explicit(spec: Mapping[str, Any], name: str, value_level: str, source: str, where: str) -> Hierarchy:
    names = [value_level]
    if "rows" in spec:  # a CSV table: value, then one column per level
        header, *rows = spec["rows"]
        names += header[1:]
        paths = {row[0]: tuple(row[1:]) for row in rows if row}
        bad = [row[0] for row in rows if row and len(row) != len(header)]
        if bad:
            raise HierarchyError(f"{where}: rows of {bad[:3]} do not have {len(header)} columns")
    elif "levels" in spec:
        # a list of {value: parent} maps, level 1 first; or of {name, parents}
        levels = [lv if "parents" in lv else {"parents": lv} for lv in spec["levels"]]
        first = levels[0]["parents"] if levels else {}
        values = [str(v) for v in spec.get("values", first.keys())]
        paths = {}
        for value in values:
            path, current = [], value
            for i, level in enumerate(levels, 1):
                parents = {str(k): str(v) for k, v in level["parents"].items()}
                if current not in parents:
                    raise HierarchyError(f"{where}: level {i}: {current!r} has no parent, so value {value!r} has no path to *")
                current = parents[current]
                path.append(current)
            paths[value] = tuple(path)
        names += [str(lv.get("name", f"level {i}")) for i, lv in enumerate(levels, 1)]
    elif "values" in spec:
        paths = {str(v): () for v in spec["values"]}
    else:
        raise HierarchyError(f"{where}: an explicit hierarchy needs `levels`, `table` or `values`")
    names.append(TOP)
    _check_nesting(paths, names, where)
    return Hierarchy(name=name, level_names=tuple(names), source=source, paths=paths)


def _ordered(spec: Mapping[str, Any], name: str, value_level: str, source: str, where: str) -> Hierarchy:
    values = [str(v) for v in spec.get("values", [])]
    sizes = [int(s) for s in spec.get("levels", [])]
    if not values or len(set(values)) != len(values):
        raise HierarchyError(f"{where}: an ordered hierarchy needs distinct `values` in order")
    previous = 1
    for size in sizes:
        if size <= previous - 1 or size % previous:
            raise HierarchyError(f"{where}: group sizes {sizes} must each be a multiple of the one before, so levels nest")
        previous = size
    paths: dict[str, tuple[str, ...]] = {}
    for index, value in enumerate(values):
        path = []
        for size in sizes:
            group = values[(index // size) * size : (index // size + 1) * size]
            path.append(group[0] if len(group) == 1 else f"{group[0]}--{group[-1]}")
        paths[value] = tuple(path)
    names = [value_level, *(f"groups of {s}" for s in sizes), TOP]
    return Hierarchy(name=name, level_names=tuple(names), source=source, paths=paths)


def _check_nesting(paths: Mapping[str, tuple[str, ...]], names: Sequence[str], where: str) -> None:
    """Values sharing a label at one level must share their label at every level above it."""
    height = len(names) - 1
    for value, path in paths.items():
        if len(path) != height - 1:
            raise HierarchyError(f"{where}: value {value!r} has {len(path)} levels, expected {height - 1}")
    for h in range(1, height - 1):
        parent: dict[str, str] = {}
        for value, path in paths.items():
            seen = parent.setdefault(path[h - 1], path[h])
            if seen != path[h]:
                raise HierarchyError(
                    f"{where}: levels do not nest: {path[h - 1]!r} ({names[h]}) has two parents {seen!r} and {path[h]!r} ({names[h + 1]})"
                )


def hierarchy_for(column: str, release_hierarchies: Mapping[str, Mapping[str, Any]] | None = None, view_hierarchy: str | None = None) -> Hierarchy:
    """The hierarchy generalizing `column`: the config's, else the view's named one, else the default.

    Falls back to `flat` (value -> *) for a quasi-identifier nobody gave a hierarchy, so it is still
    protected (it can only be kept whole or removed).
    """
    if release_hierarchies and column in release_hierarchies:
        return hierarchy_from_spec(release_hierarchies[column], where=f"release.hierarchies.{column}")
    name = view_hierarchy or DEFAULT_COLUMN_HIERARCHIES.get(column)
    if name:
        return load_builtin(name)
    return flat_hierarchy()


# -- labels at a level, and lifting (the central merge and the release record use them) --------
# privacy.hierarchies maps a level-0 VALUE to its labels; merging needs the reverse for a LABEL at
# some level. These helpers derive it from the public Hierarchy fields (paths, cuts, lower).


_LABELS: dict[tuple[int, int], tuple[Hierarchy, dict[str, str] | None]] = {}


def _labels(hierarchy: Hierarchy, level: int) -> dict[str, str] | None:
    """label at `level` -> a level-0 value carrying it; None when every value is a label (level 0
    of interval and flat hierarchies: checked value by value with `Hierarchy.path`). Cached per
    hierarchy object (packaged hierarchies are loaded once)."""
    key = (id(hierarchy), level)
    cached = _LABELS.get(key)
    if cached is None or cached[0] is not hierarchy:
        cached = _LABELS[key] = (hierarchy, _build_labels(hierarchy, level))
    return cached[1]


def _build_labels(hierarchy: Hierarchy, level: int) -> dict[str, str] | None:
    if level == 0:
        if hierarchy.paths is not None:
            return {value: value for value in hierarchy.paths}
        return None
    if hierarchy.paths is not None:
        out: dict[str, str] = {}
        for value, path in hierarchy.paths.items():
            out.setdefault(path[level - 1], value)
        return out
    if hierarchy.cuts:  # interval: one representative per band (its lowest value)
        out = {}
        for cut in hierarchy.cuts[level - 1]:
            representative = str(max(cut, hierarchy.lower))
            try:
                out.setdefault(hierarchy.path(representative)[level], representative)
            except HierarchyError:
                continue
        return out
    return {}


def is_label(hierarchy: Hierarchy, label: str, level: int) -> bool:
    """Whether `label` can appear in a column generalized to `level` ("" = NA, `*` = blanked)."""
    if label in ("", TOP):
        return True
    if level >= hierarchy.height:
        return False
    labels = _labels(hierarchy, level)
    if labels is None:
        try:
            hierarchy.path(label)
        except HierarchyError:
            return False
        return True
    return label in labels


def lift(hierarchy: Hierarchy, label: str, from_level: int, to_level: int, column: str = "") -> str:
    """The label at `to_level` of a label at `from_level` (to_level >= from_level). NA stays NA below
    the top, `*` stays `*`, everything is `*` at the top. Raises HierarchyError for an unknown label."""
    if to_level >= hierarchy.height or label == TOP:
        return TOP
    if label == "":
        return ""
    if not is_label(hierarchy, label, from_level):
        raise HierarchyError(f"{column}: {label!r} is not a label of hierarchy {hierarchy.name} at level {from_level}")
    if to_level == from_level:
        return label
    labels = _labels(hierarchy, from_level)
    value = label if labels is None else labels[label]
    return hierarchy.path(value, column)[to_level]


__all__ = [
    "BUILTIN",
    "DEFAULT_COLUMN_HIERARCHIES",
    "Hierarchy",
    "HierarchyError",
    "TOP",
    "flat_hierarchy",
    "hierarchy_for",
    "hierarchy_from_spec",
    "is_label",
    "lift",
    "load_builtin",
]
