"""The parser's fast path (``parse_many`` / ``parse_line``) and the straightforward reference parser agree, byte for
byte, on a large varied sample: ordinary lines and every kind of edge line (bad IPs, odd zones, escapes, bots, huge
bytes, Unicode digits, stray whitespace, line breaks, over-long lines)."""

from __future__ import annotations

import json
import random

import pytest

from shoplake.lambdas import weblogs_transform as wt
from shoplake.weblogs import parse_lines

CLIENTS = [
    "203.0.113.7",
    "10.0.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "2001:db8::1",
    "::1",
    "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    "::ffff:192.0.2.1",
    "fe80::1%eth0",
    "256.1.2.3",  # octet > 255
    "01.2.3.4",  # leading zero
    "1.2.3",
    "1.2.3.4.5",
    "١.٢.٣.٤",  # Arabic-Indic digits
    "1.2.3.４",  # fullwidth digit
    "www.example.com",
    "-",
    "2001:db8:::1",
    "gggg::1",
]
DAYS = [
    "10/Oct/2024",
    "29/Feb/2024",
    "29/Feb/2023",
    "31/Dec/2024",
    "01/Jan/2025",
    "32/Oct/2024",
    "10/Foo/2024",
    "1/Oct/2024",
    " 1/Oct/2024",
    "10/oct/2024",
    "00/Oct/2024",
    "31/Apr/2024",
    "10/Oct/0000",
    "10/Oct/９９９９",
]
TIMES = [
    "13:55:36",
    "00:00:00",
    "23:59:59",
    "24:00:00",
    "23:60:00",
    "23:59:60",
    "12:5:36",
    "１2:00:00",
    "0١:00:00",
    "12:00:0٥",
]
ZONES = [
    "+0000",
    "-0000",
    "-0700",
    "+0100",
    "+0530",
    "+0545",
    "-0930",
    "+1400",
    "+1500",
    "-1259",
    "+0060",
    "+0099",
    "+14",
    "0000",
    "+00000",
    "+０000",
    "-1200",
]
METHODS = ["GET", "POST", "get", "M-SEARCH", "PROPFIND", "A_B.c-1", "1GET", "G ET", "-", ""]
TARGETS = [
    "/",
    "/product/85123A",
    "/search?q=red+mug&x=1",
    "/a b",
    "*",
    "shop.example.com:443",
    "?only=query",
    "/x?",
    "/ü/ñ",
    "/a\tb",
    '/q?x=\\"y\\"',
    "/p\\x41th",
    "/back\\\\slash",
    "\\x16\\x03\\x01",
    " /lead",
]
PROTOCOLS = [
    " HTTP/1.1",
    " HTTP/2",
    " HTTP/1.0",
    "",
    " http/1.1",
    " HTTP/١",
    " HTTP/1.1.1",
    " HTTP/",
    "  HTTP/1.1",
    " HTTP/1.1 ",
]
STATUSES = ["200", "404", "500", "599", "100", "099", "600", "2000", "20", "２００", "-", "abc"]
SIZES = ["0", "2326", "-", "999999999999999", "1000000000000000", "12k", "²", "١٢٣", "-5", "007"]
REFERRERS = ["-", "https://shop.example.com/", 'https://x.org/?q=\\"mug\\"&x=\\\\', "", "\\n\\t", "ü"]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.4.0",
    "python-requests/2.31.0",
    "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
    "-",
    "",
    'Mozilla/5.0 \\"quoted\\" part',
    "HeadlessChrome/120",
    "Mozilla/5.0 (iPhone) Safari",
]
TAILS = ["", "", "", " ", "\t", "  \t", "\r", "\r\n", "\n", "\x0b", "\u3000", " x"]


def _line(rng: random.Random, odd: float) -> str:
    """A log line; with probability ``odd`` per field, that field is drawn from the edge values."""

    def pick(values: list[str]) -> str:
        return rng.choice(values) if rng.random() < odd else values[0]

    stamp = f"{pick(DAYS)}:{pick(TIMES)} {pick(ZONES)}"
    if rng.random() < odd:  # valid but varied times in the common zones, so the memo of hours is exercised
        stamp = f"{rng.randint(1, 28):02d}/{rng.choice(list(wt.MONTHS))}/{rng.randint(1999, 2030)}:" + (
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} {rng.choice(ZONES[:8])}"
        )
    request = f"{pick(METHODS)} {pick(TARGETS)}{pick(PROTOCOLS)}"
    if rng.random() < odd / 4:
        request = rng.choice(["-", "", "GET", "GET ", "\\x16\\x03", 'GET /a"b HTTP/1.1'])
    ident, user = pick(["-", "alice", "x y"]), pick(["-", "frank", "ü"])
    client = pick(CLIENTS) if rng.random() < 0.5 else f"192.0.2.{rng.randint(0, 300)}"
    line = f'{client} {ident} {user} [{stamp}] "{request}" {pick(STATUSES)} {pick(SIZES)}'
    shape = rng.random()
    if shape < 0.85:  # combined
        line += f' "{pick(REFERRERS)}" "{pick(AGENTS)}"'
    elif shape < 0.9:  # a broken combined tail
        line += rng.choice([' "-"', ' "-" ', ' "-" "x', ' "a" "b" "c"', " - -"])
    line += pick(TAILS)
    if rng.random() < odd / 10:  # spaces doubled, a field dropped, a line break inside, a blank line
        line = rng.choice([line.replace(" ", "  ", 1), line.split(" ", 1)[-1], line.replace('" ', '"\n ', 1), "", "  "])
    return line


def _sample(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = [_line(rng, odd=rng.choice([0.0, 0.05, 0.3, 1.0])) for _ in range(n)]
    normal = '203.0.113.9 - - [01/Dec/2010:08:26:00 +0000] "GET /cart HTTP/1.1" 200 5 "-" "'
    lines += [normal + "a" * (wt.MAX_LINE - len(normal) - 1) + '"', normal + "a" * wt.MAX_LINE + '"']  # at, over max
    return lines


def _as_json(doc: dict | None) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


@pytest.fixture(scope="module")
def sample() -> list[str]:
    return _sample(60_000, seed=13)


def test_the_sample_covers_both_paths_and_every_rejection_kind(sample):
    reference = [wt.parse_line_reference(line) for line in sample]
    reasons = {reason.split(":")[0] for doc, reason in reference if doc is None}
    assert reasons == {
        "empty line",
        "not an Apache common or combined log line",
        "client is not an IPv4/IPv6 address",
        "bad timestamp",
        "bad status",
        "bad bytes",
        f"line longer than {wt.MAX_LINE} characters",
    }
    parsed = [doc for doc, _ in reference if doc is not None]
    assert len(parsed) > 20_000 and len(sample) - len(parsed) > 10_000
    assert (
        any(d["bot"] for d in parsed) and any(d["query"] for d in parsed) and any(d["method"] is None for d in parsed)
    )
    assert any('"' in (d["agent"] or "") for d in parsed)  # unescaped by the reference (slow path)
    assert any(d["@timestamp"].endswith(":36Z") and "T20:55" in d["@timestamp"] for d in parsed)  # -0700 shifted
    assert any(d["bytes"] == 999_999_999_999_999 for d in parsed)
    fast_hits = sum(1 for line in sample if wt._FAST_RE.match(line) and "\\" not in line)
    assert fast_hits > 20_000  # most ordinary lines take the fast path


def test_fast_path_equals_the_reference_byte_for_byte(sample):
    docs, rejected, count = wt.parse_many(sample)
    assert count == len(sample) == len(docs) + len(rejected)  # nothing lost
    got: list[tuple[str, str | None]] = []
    it_docs, it_rej = iter(docs), iter(rejected)
    next_rej = next(it_rej, None)
    for n in range(len(sample)):
        if next_rej is not None and next_rej[0] == n:
            assert next_rej[1] == sample[n]
            got.append((_as_json(None), next_rej[2]))
            next_rej = next(it_rej, None)
        else:
            got.append((_as_json(next(it_docs)), None))
    expected = [(_as_json(doc), reason) for doc, reason in (wt.parse_line_reference(line) for line in sample)]
    mismatches = [(sample[n], g, e) for n, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e]
    assert not mismatches, mismatches[:5]


def test_parse_line_and_parse_lines_agree_with_the_reference(sample):
    subset = sample[::7]
    assert [wt.parse_line(line) for line in subset] == [wt.parse_line_reference(line) for line in subset]
    result = parse_lines(subset, first_line_no=10)
    assert result.lines == len(subset) == result.parsed + len(result.rejected)
    expected = [(n, line, r) for n, line in enumerate(subset, 10) if (r := wt.parse_line_reference(line)[1])]
    assert [(r.line_no, r.line, r.reason) for r in result.rejected] == expected


def test_the_memo_is_bounded_and_does_not_change_answers(monkeypatch):
    lines = _sample(3_000, seed=7)
    monkeypatch.setattr(wt, "_MEMO", wt._Memo())
    cold = wt.parse_many(lines)
    assert wt._MEMO.requests and wt._MEMO.hours
    assert wt.parse_many(lines) == cold  # warm memo, same answers
    monkeypatch.setattr(wt, "_CACHE_LIMIT", 50)
    wt._MEMO.trim()  # parse_many trims on entry and every 65,536 lines
    assert all(len(m) <= 50 for m in (wt._MEMO.clients, wt._MEMO.hours, wt._MEMO.requests, wt._MEMO.agents))
    assert wt.parse_many(lines) == cold
