"""The dashboard's search language (a Lucene/Kibana query-string subset), compiled to DuckDB SQL or OpenSearch DSL.

Syntax: ``status:500``, ``status:5*`` / ``status_class:5xx``, ``status:[500 TO 599]``, ``bytes:>=10000``,
``path:/product/*`` (``*`` and ``?`` wildcards), ``agent:Googlebot`` (text fields match a phrase anywhere),
``client_ip:2001:db8::1``, ``bot:true``, ``"red mug"`` and bare words (free text over request, referrer and
agent), ``AND`` / ``OR`` / ``NOT`` / ``-term`` and parentheses. Terms side by side are ANDed (like a query
string with ``default_operator: AND``). One parser, two compilers, so both backends answer the same question.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shoplake.errors import ShoplakeError


class SearchQueryError(ShoplakeError):
    """A search string the query language cannot read; the message says what is wrong."""


KEYWORD_FIELDS = ("client_ip", "method", "path", "query", "protocol", "user", "ident")
TEXT_FIELDS = ("request", "referrer", "agent")
NUMERIC_FIELDS = ("status", "bytes")
FIELDS = ("@timestamp", *KEYWORD_FIELDS, *TEXT_FIELDS, *NUMERIC_FIELDS, "bot", "status_class")
ALIASES = {
    "ip": "client_ip",
    "host": "client_ip",
    "clientip": "client_ip",
    "response": "status",
    "code": "status",
    "url": "path",
    "uri": "path",
    "timestamp": "@timestamp",
    "time": "@timestamp",
    "useragent": "agent",
    "user_agent": "agent",
    "referer": "referrer",
    "verb": "method",
    "size": "bytes",
    "authuser": "user",
}
FREE_TEXT_FIELDS = ("request", "referrer", "agent")
# fields the OpenSearch template maps as text or ip with a ``.keyword`` sub-field: exact, wildcard, range and terms
# questions go to the sub-field (the string as written, like the local index compares it)
KEYWORD_SUBFIELD = (*TEXT_FIELDS, "client_ip")
_FIELD_RE = re.compile(r"^([A-Za-z_@][\w.@]*):(.*)$", re.DOTALL)
_RANGE_RE = re.compile(r"^([\[{])\s*(\S+)\s+TO\s+(\S+)\s*([\]}])$")
_CMP_RE = re.compile(r"^(>=|<=|>|<)(.+)$")


@dataclass(frozen=True)
class Term:
    """One leaf: ``field`` (None = free text), ``kind`` eq|wildcard|phrase|range, and the value(s)."""

    field: str | None
    kind: str
    value: Any


@dataclass(frozen=True)
class Op:
    op: str  # and | or | not
    args: tuple[Any, ...]


# --------------------------------------------------------------------------- parsing


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "()":
            out.append((c, c))
            i += 1
        elif c == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(text[j])
                j += 1
            if j >= n:
                raise SearchQueryError(f'unterminated quote in {text!r}: close the phrase with "')
            out.append(("word", ("phrase", "".join(buf))))
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in "()":
                if text[j] == "\\" and j + 1 < n:
                    j += 2
                    continue
                if text[j] == ":" and j + 1 < n and text[j + 1] in '"[{':
                    closers = '"' if text[j + 1] == '"' else "]}"
                    k = min((p for p in (text.find(c, j + 2) for c in closers) if p >= 0), default=-1)
                    if k < 0:
                        raise SearchQueryError(f"unterminated {text[j + 1]} in {text!r}: close it with {closers[0]}")
                    j = k + 1
                    break
                j += 1
            word = text[i:j]
            i = j
            if word in ("AND", "&&"):
                out.append(("and", word))
            elif word in ("OR", "||"):
                out.append(("or", word))
            elif word in ("NOT", "!"):
                out.append(("not", word))
            elif word.startswith("-") and len(word) > 1:
                out.append(("not", "-"))
                out.append(("word", ("plain", word[1:])))
            elif word.startswith("+") and len(word) > 1:
                out.append(("word", ("plain", word[1:])))
            else:
                out.append(("word", ("plain", word)))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.toks[self.pos][0] if self.pos < len(self.toks) else None

    def take(self) -> tuple[str, Any]:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def parse(self) -> Any:
        if not self.toks:
            return None
        node = self.or_expr()
        if self.pos != len(self.toks):
            raise SearchQueryError(f"unexpected {self.toks[self.pos][1]!r} in {self.text!r}")
        return node

    def or_expr(self) -> Any:
        args = [self.and_expr()]
        while self.peek() == "or":
            self.take()
            args.append(self.and_expr())
        return args[0] if len(args) == 1 else Op("or", tuple(args))

    def and_expr(self) -> Any:
        args = [self.unary()]
        while self.peek() in ("and", "not", "word", "("):
            if self.peek() == "and":
                self.take()
            args.append(self.unary())
        return args[0] if len(args) == 1 else Op("and", tuple(args))

    def unary(self) -> Any:
        kind = self.peek()
        if kind is None:
            raise SearchQueryError(f"{self.text!r} ends where a search term was expected")
        if kind == "not":
            self.take()
            return Op("not", (self.unary(),))
        if kind == "(":
            self.take()
            node = self.or_expr()
            if self.peek() != ")":
                raise SearchQueryError(f"missing ) in {self.text!r}")
            self.take()
            return node
        if kind == "word":
            return _term(*self.take()[1])
        raise SearchQueryError(f"unexpected {self.toks[self.pos][1]!r} in {self.text!r}")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def _has_wildcard(value: str) -> bool:
    return re.search(r"(?<!\\)[*?]", value) is not None


def _term(kind: str, text: str) -> Term:
    if kind == "phrase":
        return Term(None, "phrase", text)
    m = _FIELD_RE.match(text)
    if m is None:
        return Term(
            None, "wildcard" if _has_wildcard(text) else "phrase", text if _has_wildcard(text) else _plain(text)
        )
    name, value = m.group(1), m.group(2)
    field = ALIASES.get(name.lower(), name)
    if field not in FIELDS:
        raise SearchQueryError(
            f"unknown field {name!r}: use one of {', '.join(FIELDS)} (quote free text that holds ':')"
        )
    if value == "":
        raise SearchQueryError(f"{text!r} has no value after the colon")
    if value.startswith('"'):
        return _typed(field, "phrase", _unquote(value))
    rm = _RANGE_RE.match(value)
    if rm:
        lo_incl, lo, hi, hi_incl = rm.group(1) == "[", rm.group(2), rm.group(3), rm.group(4) == "]"
        return _typed(field, "range", (None if lo == "*" else lo, lo_incl, None if hi == "*" else hi, hi_incl))
    cm = _CMP_RE.match(value)
    if cm:
        op, bound = cm.groups()
        if op.startswith(">"):
            return _typed(field, "range", (bound, op == ">=", None, True))
        return _typed(field, "range", (None, True, bound, op == "<="))
    if _has_wildcard(value):
        return _typed(field, "wildcard", value)
    return _typed(field, "eq", _plain(value))


def _plain(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def _number(field: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SearchQueryError(f"{field} needs a whole number, got {value!r}") from None


def _typed(field: str, kind: str, value: Any) -> Term:
    """Normalise a field term: numbers checked, status wildcards/classes become ranges, bot a boolean."""
    if field == "status_class" or (field == "status" and kind == "wildcard"):
        digits = str(value).lower().rstrip("x*?")
        if (
            not digits.isdigit()
            or len(digits) > 3
            or not "1" <= digits[0] <= "5"
            or (field == "status_class" and len(digits) != 1)
        ):
            raise SearchQueryError(f"{field}:{value} is not a status class: write status_class:5xx or status:5*")
        scale = 10 ** (3 - len(digits))
        return Term("status", "range", (int(digits) * scale, True, (int(digits) + 1) * scale - 1, True))
    if field in NUMERIC_FIELDS:
        if kind == "wildcard":
            raise SearchQueryError(f"wildcards do not work on {field}: use a range like {field}:[1000 TO *]")
        if kind == "range":
            lo, lo_incl, hi, hi_incl = value
            return Term(field, "range", (_number(field, lo), lo_incl, _number(field, hi), hi_incl))
        return Term(field, "eq", _number(field, value))
    if field == "bot":
        if str(value).lower() not in ("true", "false"):
            raise SearchQueryError(f"bot is true or false, got {value!r}")
        return Term("bot", "eq", str(value).lower() == "true")
    if field == "@timestamp" and kind not in ("range",):
        if kind == "wildcard":
            raise SearchQueryError(
                "@timestamp takes a range: @timestamp:[2024-01-01T00:00:00Z TO *] or @timestamp:>=..."
            )
        return Term(field, "range", (value, True, value, True))
    return Term(field, kind, value)


def parse_query(text: str | None) -> Any:
    """The syntax tree of a search string (None for an empty search: everything matches)."""
    if text is None or not text.strip() or text.strip() == "*":
        return None
    return _Parser(text).parse()


# --------------------------------------------------------------------------- DuckDB SQL

_COLUMN = {"@timestamp": "ts"}


def _like_pattern(value: str) -> str:
    out = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append("\\" + nxt if nxt in "%_\\" else nxt)
            i += 2
            continue
        out.append({"*": "%", "?": "_", "%": "\\%", "_": "\\_"}.get(c, c))
        i += 1
    return "".join(out)


def _sql_escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _sql_term(t: Term, params: list[Any]) -> str:
    if t.field is None:
        pattern = "%" + (_like_pattern(t.value) if t.kind == "wildcard" else _sql_escape_like(t.value)) + "%"
        params.extend([pattern] * len(FREE_TEXT_FIELDS))
        return "(" + " OR ".join(f"{f} ILIKE ? ESCAPE '\\'" for f in FREE_TEXT_FIELDS) + ")"
    col = _COLUMN.get(t.field, t.field)
    if t.kind == "range":
        lo, lo_incl, hi, hi_incl = t.value
        parts = []
        if lo is not None:
            parts.append(f"{col} {'>=' if lo_incl else '>'} ?")
            params.append(lo)
        if hi is not None:
            parts.append(f"{col} {'<=' if hi_incl else '<'} ?")
            params.append(hi)
        if col == "ts":
            parts = [p.replace("?", "CAST(? AS TIMESTAMPTZ)::TIMESTAMP") for p in parts]
        return "(" + " AND ".join(parts) + ")" if parts else "TRUE"
    if t.field in TEXT_FIELDS:
        pattern = "%" + (_like_pattern(t.value) if t.kind == "wildcard" else _sql_escape_like(t.value)) + "%"
        params.append(pattern)
        return f"{col} ILIKE ? ESCAPE '\\'"
    if t.kind == "wildcard":
        params.append(_like_pattern(t.value))
        return f"{col} LIKE ? ESCAPE '\\'"
    params.append(t.value)
    return f"{col} = ?"


def _sql(node: Any, params: list[Any]) -> str:
    if isinstance(node, Term):
        return _sql_term(node, params)
    if node.op == "not":
        return f"(NOT coalesce({_sql(node.args[0], params)}, FALSE))"
    joiner = " AND " if node.op == "and" else " OR "
    return "(" + joiner.join(_sql(a, params) for a in node.args) + ")"


def to_sql(text: str | None) -> tuple[str, list[Any]]:
    """A search string → a DuckDB ``WHERE`` condition and its parameters."""
    node = parse_query(text)
    params: list[Any] = []
    return ("TRUE", params) if node is None else (_sql(node, params), params)


# --------------------------------------------------------------------------- OpenSearch DSL


def keyword_field(field: str) -> str:
    """The field (or ``.keyword`` sub-field) of the OpenSearch template that compares whole strings."""
    return f"{field}.keyword" if field in KEYWORD_SUBFIELD else field


def _dsl_term(t: Term) -> dict[str, Any]:
    if t.field is None:
        if t.kind == "wildcard":
            return {
                "bool": {
                    "should": [
                        {"wildcard": {f"{f}.keyword": {"value": f"*{t.value}*", "case_insensitive": True}}}
                        for f in FREE_TEXT_FIELDS
                    ],
                    "minimum_should_match": 1,
                }
            }
        return {"multi_match": {"query": t.value, "type": "phrase", "fields": list(FREE_TEXT_FIELDS)}}
    if t.kind == "range":
        lo, lo_incl, hi, hi_incl = t.value
        bounds: dict[str, Any] = {}
        if lo is not None:
            bounds["gte" if lo_incl else "gt"] = lo
        if hi is not None:
            bounds["lte" if hi_incl else "lt"] = hi
        return {"range": {keyword_field(t.field): bounds}}
    if t.field in TEXT_FIELDS:
        if t.kind == "wildcard":
            return {"wildcard": {keyword_field(t.field): {"value": f"*{t.value}*", "case_insensitive": True}}}
        return {"match_phrase": {t.field: t.value}}
    if t.kind == "wildcard":
        return {"wildcard": {keyword_field(t.field): {"value": t.value}}}
    return {"term": {keyword_field(t.field): t.value}}


def _dsl(node: Any) -> dict[str, Any]:
    if isinstance(node, Term):
        return _dsl_term(node)
    if node.op == "not":
        return {"bool": {"must_not": [_dsl(node.args[0])]}}
    if node.op == "and":
        return {"bool": {"filter": [_dsl(a) for a in node.args]}}
    return {"bool": {"should": [_dsl(a) for a in node.args], "minimum_should_match": 1}}


def to_dsl(text: str | None) -> dict[str, Any]:
    """A search string → an OpenSearch query clause."""
    node = parse_query(text)
    return {"match_all": {}} if node is None else _dsl(node)
