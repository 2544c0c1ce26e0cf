"""Bad numbers and options on the command line: a one-line usage error naming the option, never a traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from shoplake.cli import cli

CASES = [
    (["logs", "search", "--size", "-5", "x"], "--size"),
    (["logs", "search", "--index-path", "/nonexistent/index.duckdb", "x"], "--index-path"),
    (["dashboard", "--port", "-1"], "--port"),
    (["dashboard", "--port", "99999"], "--port"),
    (["dashboard", "--refresh", "nan"], "--refresh"),
    (["dashboard", "--refresh", "0"], "--refresh"),
    (["logs", "parse", "--show-rejected", "-1", "data/samples/access_tricky.log"], "--show-rejected"),
    (["simulate-servers", "--rotate-lines", "-1"], "--rotate-lines"),
    (["simulate-servers", "--speed", "nan"], "--speed"),
    (["simulate-servers", "--servers", "0"], "--servers"),
    (["simulate-servers", "--scale", "huge"], "--scale"),
    (["alarm", "evaluate", "--seed", "-1"], "--seed"),
    (["alarm", "evaluate", "--window-seconds", "0"], "--window-seconds"),
]


@pytest.mark.parametrize(("args", "option"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_option_values_are_usage_errors(args, option):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert option in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_huge_rejected_line_is_not_echoed_whole(tmp_path):
    log = tmp_path / "huge.log"
    log.write_text("x" * 2_000_000 + "\n")
    result = CliRunner().invoke(cli, ["logs", "parse", "--json", str(log)])
    assert result.exit_code == 0 and len(result.output) < 5_000
