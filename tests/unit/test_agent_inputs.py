"""Bad agent inputs (issue 16, Low): an agent config that is a folder, binary or not a mapping, bad numbers in it,
and a rotation every -1 lines, each get a one-line error naming the problem, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shoplake.agent._flows import load_config
from shoplake.agent._servers import RotatingLog, simulate_servers
from shoplake.errors import ConfigError

FLOW = "flows: [{name: a, filePattern: x, kinesisStream: s"


def _make(tmp_path: Path, content: bytes | None) -> Path:
    path = tmp_path / "agent.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    return path


BAD_FILES = [
    (None, "is a folder"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
    (b"flows:\n  - name: \xb5\xfe\xff", "not UTF-8 text"),
    (b"- just\n- a list\n", "must be a YAML mapping"),
    (b"flows: [a, b\n  c: {", "not valid YAML"),
    ((FLOW + ", maxBatchRecords: -5}]").encode(), "maxBatchRecords must be a whole number"),
    ((FLOW + ", maxBatchBytes: lots}]").encode(), "maxBatchBytes must be a whole number"),
    (b"pollIntervalSeconds: .nan\n" + FLOW.encode() + b"}]", "pollIntervalSeconds must be a number"),
]
IDS = ["folder", "binary", "latin1", "list", "yaml", "batch-records", "batch-bytes", "poll-nan"]


@pytest.mark.parametrize(("content", "message"), BAD_FILES, ids=IDS)
def test_a_bad_agent_config_is_a_one_line_config_error(tmp_path, content, message):
    path = _make(tmp_path, content)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize(("content", "message"), BAD_FILES[:3], ids=IDS[:3])
@pytest.mark.parametrize("entry", ["shoplake.agent", "shoplake.cli"])
def test_the_agent_cli_prints_one_line_for_a_folder_or_binary_config(tmp_path, content, message, entry):
    """Both entries (``python -m shoplake.agent run`` and ``shoplake agent run``): exit 2, one line, no traceback."""
    path = _make(tmp_path, content)
    args = ["agent", "run"] if entry == "shoplake.cli" else ["run"]
    result = subprocess.run(
        [sys.executable, "-m", entry, *args, "--config", str(path), "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("bad", [-1, 0, 2.5, True])
def test_rotating_every_minus_one_lines_is_refused(tmp_path, bad):
    """``rotate_lines=-1`` used to rotate on every line (and 0 never): the API refuses both, as the CLI does."""
    with pytest.raises(ConfigError, match="rotate_lines must be a whole number"):
        simulate_servers(None, ["a line"], tmp_path / "servers", rotate_lines=bad)
    with pytest.raises(ConfigError, match="rotate_lines must be a whole number"):
        RotatingLog(tmp_path / "app.log", rotate_lines=bad)
    assert not (tmp_path / "servers").exists()


def test_simulate_servers_refuses_nan_speed_and_a_fractional_server_count(tmp_path):
    with pytest.raises(ConfigError, match="speed must be a positive number"):
        simulate_servers(None, ["a line"], tmp_path, speed=float("nan"))
    with pytest.raises(ConfigError, match="servers must be a whole number"):
        simulate_servers(None, ["a line"], tmp_path, servers=1.5)


@pytest.mark.parametrize("date", ["2010-12-1T08:26:00Z", "12/1/2010 8:26", "2010-02-30T08:26:00Z"])
def test_an_order_line_with_a_date_the_events_do_not_take_is_a_one_line_data_error(date):
    from order_line import ORDER_LINE

    from shoplake.agent._servers import order_lines_of
    from shoplake.errors import DataError

    with pytest.raises(DataError, match=r"InvoiceDate .* is not an ISO 8601 UTC time") as raised:
        list(order_lines_of([{**ORDER_LINE, "InvoiceDate": date}]))
    assert "\n" not in str(raised.value)
    assert len(list(order_lines_of([ORDER_LINE]))) == 1
