"""The SOQL subset the Salesforce sandbox understands: enough for what the connector and the tests send.

Supported: `SELECT a, b.c, COUNT(), (SELECT x FROM ChildRelationship [WHERE ...]) FROM Object
[WHERE cond] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...] [LIMIT n]`, where `cond` combines with
AND / OR / NOT and parentheses comparisons (`= != <> < <= > >=`) against string, number, date,
datetime, TRUE/FALSE/NULL literals, `IN (...)` / `NOT IN (...)` lists and semi-joins
(`Id IN (SELECT Case__c FROM Support_Plan__c)`). Anything else is a `SoqlError`, which the server
answers as Salesforce does: HTTP 400 `MALFORMED_QUERY` (or `INVALID_FIELD` for unknown fields).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
      | (?P<date>\d{4}-\d{2}-\d{2})
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<string>'(?:[^'\\]|\\.)*')
      | (?P<op><=|>=|!=|<>|=|<|>)
      | (?P<punct>[(),])
      | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
KEYWORDS = {"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "ORDER", "BY", "ASC", "DESC", "NULLS", "FIRST", "LAST", "LIMIT", "TRUE", "FALSE", "NULL", "COUNT"}


class SoqlError(ValueError):
    """A query outside the subset or malformed; `code` is the Salesforce errorCode to answer with."""

    def __init__(self, message: str, code: str = "MALFORMED_QUERY"):
        self.code = code
        super().__init__(message)


@dataclass
class Token:
    kind: str
    value: Any
    text: str


@dataclass
class Query:
    obj: str
    fields: list[str] = field(default_factory=list)
    subqueries: list["Query"] = field(default_factory=list)
    count: bool = False
    where: Any = None
    order: list[tuple[str, bool, bool]] = field(default_factory=list)  # (field, descending, nulls_last)
    limit: int | None = None


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise SoqlError(f"unexpected token at position {pos}: {text[pos:pos + 20]!r}")
        pos = match.end()
        kind = match.lastgroup or ""
        raw = match.group(kind)
        if kind == "datetime":
            stamp = raw.replace("Z", "+00:00")
            if re.search(r"[+-]\d{4}$", stamp):
                stamp = stamp[:-2] + ":" + stamp[-2:]
            tokens.append(Token("literal", datetime.fromisoformat(stamp).astimezone(timezone.utc), raw))
        elif kind == "date":
            tokens.append(Token("literal", date.fromisoformat(raw), raw))
        elif kind == "number":
            tokens.append(Token("literal", float(raw) if "." in raw else int(raw), raw))
        elif kind == "string":
            tokens.append(Token("literal", re.sub(r"\\(.)", r"\1", raw[1:-1]), raw))
        elif kind == "name" and raw.upper() in KEYWORDS:
            upper = raw.upper()
            if upper in ("TRUE", "FALSE", "NULL"):
                tokens.append(Token("literal", {"TRUE": True, "FALSE": False, "NULL": None}[upper], raw))
            else:
                tokens.append(Token("kw", upper, raw))
        else:
            tokens.append(Token(kind, raw, raw))
    return tokens


class _Parser:
    def __init__(self, tokens: list[Token]):
        self.tokens = tokens
        self.pos = 0

    def peek(self, offset: int = 0) -> Token | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise SoqlError("unexpected end of query")
        self.pos += 1
        return token

    def is_kw(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "kw" and token.value in words

    def expect_kw(self, word: str) -> None:
        token = self.take()
        if token.kind != "kw" or token.value != word:
            raise SoqlError(f"expected {word}, found {token.text!r}")

    def expect_punct(self, char: str) -> None:
        token = self.take()
        if token.kind != "punct" or token.value != char:
            raise SoqlError(f"expected {char!r}, found {token.text!r}")

    def query(self) -> Query:
        self.expect_kw("SELECT")
        fields: list[str] = []
        subqueries: list[Query] = []
        count = False
        while True:
            token = self.peek()
            if token is None:
                raise SoqlError("unexpected end of query in SELECT list")
            if token.kind == "kw" and token.value == "COUNT":
                self.take()
                self.expect_punct("(")
                self.expect_punct(")")
                count = True
            elif token.kind == "punct" and token.value == "(":
                self.take()
                subqueries.append(self.query())
                self.expect_punct(")")
            elif token.kind == "name":
                fields.append(self.take().value)
            else:
                raise SoqlError(f"unexpected {token.text!r} in SELECT list")
            if self.peek() is not None and self.peek().kind == "punct" and self.peek().value == ",":  # type: ignore[union-attr]
                self.take()
                continue
            break
        self.expect_kw("FROM")
        obj = self.take()
        if obj.kind != "name":
            raise SoqlError(f"expected an object name after FROM, found {obj.text!r}")
        query = Query(obj=obj.value, fields=fields, subqueries=subqueries, count=count)
        if self.is_kw("WHERE"):
            self.take()
            query.where = self.condition()
        if self.is_kw("ORDER"):
            self.take()
            self.expect_kw("BY")
            while True:
                name = self.take()
                if name.kind != "name":
                    raise SoqlError(f"expected a field in ORDER BY, found {name.text!r}")
                descending = False
                if self.is_kw("ASC", "DESC"):
                    descending = self.take().value == "DESC"
                nulls_last = descending
                if self.is_kw("NULLS"):
                    self.take()
                    nulls_last = self.take().value == "LAST"
                query.order.append((name.value, descending, nulls_last))
                if self.peek() is not None and self.peek().kind == "punct" and self.peek().value == ",":  # type: ignore[union-attr]
                    self.take()
                    continue
                break
        if self.is_kw("LIMIT"):
            self.take()
            limit = self.take()
            if limit.kind != "literal" or not isinstance(limit.value, int):
                raise SoqlError("LIMIT needs an integer")
            query.limit = limit.value
        return query

    def condition(self) -> Any:
        left = self.conjunction()
        while self.is_kw("OR"):
            self.take()
            left = ("or", left, self.conjunction())
        return left

    def conjunction(self) -> Any:
        left = self.negation()
        while self.is_kw("AND"):
            self.take()
            left = ("and", left, self.negation())
        return left

    def negation(self) -> Any:
        if self.is_kw("NOT"):
            self.take()
            return ("not", self.negation())
        token = self.peek()
        if token is not None and token.kind == "punct" and token.value == "(":
            self.take()
            inner = self.condition()
            self.expect_punct(")")
            return inner
        return self.comparison()

    def comparison(self) -> Any:
        name = self.take()
        if name.kind != "name":
            raise SoqlError(f"expected a field name, found {name.text!r}")
        negate = False
        if self.is_kw("NOT"):
            self.take()
            negate = True
        if self.is_kw("IN"):
            self.take()
            self.expect_punct("(")
            if self.is_kw("SELECT"):
                sub = self.query()
                self.expect_punct(")")
                node: Any = ("semijoin", name.value, sub)
            else:
                values = []
                while True:
                    literal = self.take()
                    if literal.kind != "literal":
                        raise SoqlError(f"expected a literal in IN list, found {literal.text!r}")
                    values.append(literal.value)
                    if self.peek() is not None and self.peek().kind == "punct" and self.peek().value == ",":  # type: ignore[union-attr]
                        self.take()
                        continue
                    break
                self.expect_punct(")")
                node = ("in", name.value, values)
            return ("not", node) if negate else node
        if negate:
            raise SoqlError("NOT must be followed by IN here")
        op = self.take()
        if op.kind != "op":
            raise SoqlError(f"expected a comparison operator after {name.text}, found {op.text!r}")
        literal = self.take()
        if literal.kind != "literal":
            raise SoqlError(f"expected a literal after {name.text} {op.text}, found {literal.text!r}")
        return ("cmp", name.value, "!=" if op.value == "<>" else op.value, literal.value)


def parse(text: str) -> Query:
    """Parse one SOQL statement of the subset; raises SoqlError naming what was not understood."""
    parser = _Parser(tokenize(text))
    query = parser.query()
    if parser.peek() is not None:
        raise SoqlError(f"unexpected {parser.peek().text!r} after the query")  # type: ignore[union-attr]
    return query


def compare(left: Any, op: str, right: Any) -> bool:
    """SOQL comparison semantics: NULL only equals NULL; strings compare case-insensitively for =."""
    if op == "=":
        if isinstance(left, str) and isinstance(right, str):
            return left.casefold() == right.casefold()
        return left == right
    if op == "!=":
        return not compare(left, "=", right)
    if left is None or right is None:
        return False
    if isinstance(left, datetime) and isinstance(right, date) and not isinstance(right, datetime):
        right = datetime(right.year, right.month, right.day, tzinfo=timezone.utc)
    try:
        if op == "<":
            return left < right
        if op == "<=":
            return left <= right
        if op == ">":
            return left > right
        if op == ">=":
            return left >= right
    except TypeError:
        raise SoqlError(f"cannot compare {type(left).__name__} with {type(right).__name__}", "INVALID_QUERY_FILTER_OPERATOR") from None
    raise SoqlError(f"unknown operator {op}")


def condition_fields(node: Any) -> list[str]:
    """Every field a WHERE clause refers to (not those of semi-join subqueries)."""
    if node is None:
        return []
    kind = node[0]
    if kind in ("and", "or"):
        return condition_fields(node[1]) + condition_fields(node[2])
    if kind == "not":
        return condition_fields(node[1])
    return [node[1]]
