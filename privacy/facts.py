"""Facts: the units a k-anonymized release generalizes and suppresses, in the order they are kept.

Why facts and not columns: the release view repeats one fact in several columns. A means of
control is a flag (`meansOfControlDebtBondage`) AND a member of `meansOfControlConcatenated`;
`isSexAndLabour` repeats two exploitation flags; `RecruiterRelationship` lists what the
`recruiterRelation*` flags say. Suppressing the flag but publishing the concatenated column hides
nothing, so a fact is every column that carries it, and it is shown or suppressed (`*`) as one.

Facts are read from the release view's rules, not listed by hand:
- a `concat` column and every flag it lists are one fact;
- an `all_flags` column joins the fact of the flags it combines;
- a `join` column (a multi-select written out) joins the flags that read the same field;
- every other column with a hierarchy (a quasi-identifier) is a fact of its own, specialized one
  hierarchy level at a time, never finer than its `finest` level;
- every other publishable column is a fact of its own; `process` columns (Datasource) are not
  facts: they are the same for every row of a partner.

The order of facts is the order in which detail is kept (most important first). The default keeps
what CTDC's data is read for: year of registration, country of exploitation and age band first.
A partner changes it with `release.importance` (column names; any member names its fact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from privacy.hierarchies import Hierarchy

# Most important first; facts named by any of their columns. Facts not listed follow in view order.
DEFAULT_IMPORTANCE = (
    "yearOfRegistration",
    "CountryOfExploitation",
    "majorityStatus",
    "ageBroad",
    "gender",
    "typeOfExploitConcatenated",
    "citizenship",
    "typeOfLabourConcatenated",
    "typeOfSexConcatenated",
    "meansOfControlConcatenated",
    "RecruiterRelationship",
    "isAbduction",
)
# The finest level published by default: CTDC publishes age in its bands, not in years.
DEFAULT_FINEST = {"ageBroad": 2}


@dataclass(frozen=True)
class Fact:
    """One fact: its columns and, for a quasi-identifier, the hierarchy it is specialized along."""

    name: str  # the column that names it (the concatenated column, or the only column)
    columns: tuple[str, ...]
    hierarchy: Hierarchy | None = None  # set for a single-column fact generalized level by level
    finest: int = 0  # the finest hierarchy level ever published

    @property
    def steps(self) -> tuple[int, ...]:
        """Hierarchy levels from just below `*` down to `finest` (one step for a plain fact)."""
        if self.hierarchy is None:
            return (0,)
        return tuple(range(self.hierarchy.height - 1, self.finest - 1, -1))


class FactError(ValueError):
    """The release settings name a column that is no fact of the release."""


def group_columns(columns: Sequence[str], rules: Mapping[str, Mapping[str, Any]], roles: Mapping[str, str]) -> list[list[str]]:
    """Columns that carry one fact, in view order (union of the rule links in the module docstring)."""
    present = [c for c in columns if roles.get(c) != "process"]
    parent = {c: c for c in present}

    def find(c: str) -> str:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    def union(a: str, b: str) -> None:
        if a in parent and b in parent:
            parent[find(b)] = find(a)

    field_flags: dict[str, list[str]] = {}
    for c in present:
        rule = rules.get(c) or {}
        if "flag" in rule:
            field_flags.setdefault(str(rule["flag"]), []).append(c)
    for c in present:
        rule = rules.get(c) or {}
        for member in rule.get("concat", []) or []:
            union(c, member)
        for member in rule.get("all_flags", []) or []:
            union(member, c)
        if "join" in rule:
            for flag in field_flags.get(str(rule["join"]), []):
                union(c, flag)
    groups: dict[str, list[str]] = {}
    for c in present:
        groups.setdefault(find(c), []).append(c)
    return list(groups.values())


def plan_facts(
    columns: Sequence[str],
    *,
    rules: Mapping[str, Mapping[str, Any]],
    roles: Mapping[str, str],
    hierarchies: Mapping[str, Hierarchy],
    importance: Iterable[str] = (),
    finest: Mapping[str, int] | None = None,
) -> list[Fact]:
    """The facts of a release's columns, most important first.

    `hierarchies` names the columns generalized level by level (the quasi-identifiers); `finest`
    overrides DEFAULT_FINEST per column. Raises FactError naming an unknown column or level.
    """
    finest = {**DEFAULT_FINEST, **dict(finest or {})}
    groups = group_columns(columns, rules, roles)
    facts: list[Fact] = []
    for group in groups:
        concat = [c for c in group if "concat" in (rules.get(c) or {})]
        name = concat[0] if concat else (next((c for c in group if "join" in (rules.get(c) or {})), group[0]))
        if len(group) == 1 and group[0] in hierarchies:
            hierarchy = hierarchies[group[0]]
            level = int(finest.get(group[0], 0))
            if not 0 <= level < hierarchy.height:
                raise FactError(f"release.levels.{group[0]}: level {level} is not below the top of hierarchy {hierarchy.name} (0..{hierarchy.height - 1})")
            facts.append(Fact(name, tuple(group), hierarchy, level))
        else:
            facts.append(Fact(name, tuple(group)))
    for column in finest:
        if column in columns and column not in hierarchies and column not in DEFAULT_FINEST:
            raise FactError(f"release.levels.{column}: {column!r} has no hierarchy; levels apply to quasi-identifiers")
    by_column = {c: f for f in facts for c in f.columns}
    order: list[Fact] = []
    for column in [*importance, *DEFAULT_IMPORTANCE]:
        fact = by_column.get(column)
        if fact is None:
            if column in importance and column != "perpetrators":  # the victim-perpetrator fact, placed by privacy.protect
                raise FactError(f"release.importance: {column!r} is not a published column of the release")
            continue
        if fact not in order:
            order.append(fact)
    order += [f for f in facts if f not in order]
    return order


__all__ = ["DEFAULT_FINEST", "DEFAULT_IMPORTANCE", "Fact", "FactError", "group_columns", "plan_facts"]
