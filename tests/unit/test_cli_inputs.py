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


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"\x00\x01\xff\xfe select", "not UTF-8 text"), (b"select 1\x00", "NUL bytes"), (None, "is a folder")],
    ids=["binary", "nul", "folder"],
)
def test_a_sql_file_that_is_not_text_is_a_one_line_error(tmp_path, content, reason):
    from shoplake.warehouse import SqlQueryError, load_query

    path = tmp_path / "q.sql"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(SqlQueryError, match=reason) as caught:
        load_query(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_user_text_files_lose_a_byte_order_mark_and_keep_their_text(tmp_path):
    from shoplake.errors import DataError, read_user_text

    path = tmp_path / "q.sql"
    path.write_bytes("\ufeffselect 'é'".encode())
    assert read_user_text(path, "the SQL file") == "select 'é'"
    with pytest.raises(DataError, match="does not exist"):
        read_user_text(tmp_path / "missing.sql", "the SQL file")
