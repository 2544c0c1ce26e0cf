"""The local services' lifecycle against the real processes, in a state folder of its own."""

import os
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(__file__)


def _run_cli(home, *args):
    env = {**os.environ, "SHOPLAKE_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "shoplake.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture()
def private_services(tmp_path, monkeypatch):
    """Local services with their own state folder (the shared one used by other tests is untouched)."""
    from shoplake import config, local_services

    monkeypatch.setenv("SHOPLAKE_HOME", str(tmp_path / "home"))
    config.clear_caches()
    yield local_services
    local_services.down(purge=True)
    config.clear_caches()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = open(f"/proc/{pid}/stat").read()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_up_status_idempotent_down(private_services):
    local_services = private_services
    assert not local_services.status().up
    began = time.perf_counter()
    status = local_services.ensure()
    assert status.up, status.lines()
    assert time.perf_counter() - began < 30  # generous; the figure is reported by `shoplake local up`
    state = local_services.read_state()
    pids = state["moto"]["pid"], state["postgres"]["pid"]
    # a second ensure reuses the running processes
    local_services.ensure()
    assert (local_services.read_state()["moto"]["pid"], local_services.read_state()["postgres"]["pid"]) == pids
    # PostgreSQL really answers SQL through the pg8000 connection awswrangler uses
    conn = local_services.postgres_connection()
    assert conn.run("select 40 + 2")[0][0] == 42
    conn.close()
    local_services.down()
    for pid in pids:
        deadline = time.time() + 10
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), f"process {pid} survived `down`"
    assert not local_services.status().up


def test_recovers_from_a_killed_emulator_and_a_stale_pid(private_services):
    local_services = private_services
    local_services.ensure()
    old = local_services.read_state()["moto"]
    generation = local_services.moto_generation()
    os.kill(old["pid"], signal.SIGKILL)
    time.sleep(0.3)
    status = local_services.ensure()
    assert status.moto_healthy
    assert local_services.read_state()["moto"]["pid"] != old["pid"]
    assert local_services.moto_generation() == generation + 1


def test_a_killed_dynamodb_emulator_is_replaced_and_down_stops_every_emulator(private_services):
    """issue 13: DynamoDB runs in an emulator process of its own; when it dies, ensure() starts a new one (a restart:
    the generation grows) and leaves the main emulator running; down stops both."""
    local_services = private_services
    status = local_services.ensure()
    assert status.up and set(status.emulators) == {"dynamodb"}
    state = local_services.read_state()
    main, dynamodb = state["moto"], state["emulators"]["dynamodb"]
    assert dynamodb["pid"] != main["pid"] and dynamodb["url"] != main["url"]
    assert local_services.service_url("dynamodb") == dynamodb["url"]
    assert local_services.service_url("kinesis") == local_services.moto_url() == main["url"]
    assert any("dynamodb" in line for line in status.lines())
    generation = local_services.moto_generation()
    os.kill(dynamodb["pid"], signal.SIGKILL)
    time.sleep(0.3)
    assert not local_services.status().up
    assert local_services.ensure().up
    state = local_services.read_state()
    assert state["moto"]["pid"] == main["pid"]
    assert state["emulators"]["dynamodb"]["pid"] != dynamodb["pid"]
    assert local_services.moto_generation() == generation + 1
    pids = [state["moto"]["pid"], state["emulators"]["dynamodb"]["pid"]]
    local_services.down()
    for pid in pids:
        deadline = time.time() + 10
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), f"emulator {pid} survived `down`"


def test_down_stack_gives_a_clear_message(private_services):
    from shoplake.errors import LocalServicesError

    with pytest.raises(LocalServicesError, match="make local-up"):
        private_services.moto_url()
    with pytest.raises(LocalServicesError, match="local up"):
        private_services.postgres_params()


def test_cli_status_exit_codes(tmp_path):
    home = tmp_path / "cli-home"
    try:
        assert _run_cli(home, "local", "status").returncode == 1
        up = _run_cli(home, "local", "up")
        assert up.returncode == 0, up.stderr
        assert "AWS emulator : http://127.0.0.1:" in up.stdout
        assert _run_cli(home, "local", "status").returncode == 0
    finally:
        down = _run_cli(home, "local", "down", "--purge")
        assert down.returncode == 0, down.stderr


def test_a_run_stops_only_the_stack_it_started(private_services):
    from shoplake import workbook

    local_services = private_services
    with workbook.held_for_run():
        assert local_services.status().up
    assert not local_services.status().up, "a run that started the stack stops it"
    local_services.ensure()
    with workbook.held_for_run():
        pass
    assert local_services.status().up, "a run must not stop a stack someone else started (JupyterLab, tests)"


def test_proxies_in_the_environment_never_see_loopback_traffic(private_services, monkeypatch):
    """A proxy on a refused port: the health check and every client must still reach the emulator directly, and
    ensure() must not replace a healthy emulator (and lose its data) because a proxied check failed."""
    from shoplake import config

    local_services = private_services
    first = local_services.ensure()
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(key, "http://127.0.0.1:9")  # discard port: nothing listens, every proxied request fails
    for key in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(key, raising=False)
    config.clear_caches()
    config.client("s3").create_bucket(Bucket="proxy-probe")
    second = local_services.ensure()
    assert second.moto_pid == first.moto_pid, "a healthy emulator was replaced"
    assert "proxy-probe" in [b["Name"] for b in config.client("s3").list_buckets()["Buckets"]]


def test_a_live_but_silent_emulator_is_reported_not_killed(private_services):
    local_services = private_services
    status = local_services.ensure()
    os.kill(status.moto_pid, signal.SIGSTOP)  # alive, but answers nothing
    try:
        with pytest.raises(local_services.LocalServicesError, match="does not answer"):
            local_services.ensure()
        assert _alive(status.moto_pid)
    finally:
        os.kill(status.moto_pid, signal.SIGCONT)
    assert local_services.ensure().moto_pid == status.moto_pid


@pytest.mark.skipif(os.geteuid() != 0, reason="the PostgreSQL folder under the temp dir is only used as root")
def test_postgres_folder_as_root_is_private_and_never_a_planted_one(private_services):
    import stat
    from pathlib import Path

    local_services = private_services
    first = Path(local_services.ensure().postgres["pgdata"]).parent
    info = first.lstat()
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid != 0
    local_services.down()
    assert Path(local_services.ensure().postgres["pgdata"]).parent == first, "the recorded folder is reused"
    local_services.down()
    first.chmod(0o777)  # tampered with while the stack was down: never trusted again
    second = Path(local_services.ensure().postgres["pgdata"]).parent
    assert second != first and stat.S_IMODE(second.lstat().st_mode) == 0o700
    first.chmod(0o700)
    import shutil

    shutil.rmtree(first, ignore_errors=True)


def test_state_mirroring_the_emulator_starts_over_after_a_restart(private_services, tmp_path):
    """Agent checkpoints and the local log index describe what the emulator held: a new emulator holds nothing."""
    from shoplake.agent._agent import _start_over_after_an_emulator_restart
    from shoplake.weblogs import LocalIndex, parse_lines

    local_services = private_services
    local_services.ensure()
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    (agent_dir / "checkpoints.json").write_text('{"flows": {}}')
    _start_over_after_an_emulator_restart(agent_dir)  # first run records the generation
    assert (agent_dir / "checkpoints.json").exists()
    index_path = tmp_path / "index.duckdb"
    index = LocalIndex(index_path)
    line = '203.0.113.9 - - [01/Dec/2010:08:26:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8"'
    index.ingest(parse_lines([line]).docs, source="probe")
    assert index.count() == 1
    index.close()

    _start_over_after_an_emulator_restart(agent_dir)  # same emulator: nothing changes
    assert (agent_dir / "checkpoints.json").exists()
    local_services.down()
    local_services.ensure()  # a new emulator: empty
    _start_over_after_an_emulator_restart(agent_dir)
    assert not (agent_dir / "checkpoints.json").exists() and list(agent_dir.glob("checkpoints.emulator-*.json"))
    reopened = LocalIndex(index_path)
    assert reopened.count() == 0
    reopened.close()


def test_state_folders_holding_data_are_private(private_services, tmp_path):
    """The state folder (PostgreSQL password), agent folders (dead letters) and index folders are 0700."""
    import stat
    from pathlib import Path

    from shoplake import config
    from shoplake.agent._agent import Agent
    from shoplake.agent._flows import load_config
    from shoplake.weblogs import LocalIndex

    local_services = private_services
    local_services.ensure()
    home = Path(config.settings().home)
    agent = Agent(load_config(), state_dir=tmp_path / "agent" / "p1")
    index = LocalIndex(tmp_path / "weblogs" / "p1.duckdb")
    index.close()
    for folder in (home, agent.state_dir, tmp_path / "weblogs"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
