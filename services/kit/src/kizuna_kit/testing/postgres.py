"""A real, throw-away PostgreSQL cluster for integration tests."""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql

from kizuna_kit.ports import free_port

__all__ = ["PostgresCluster", "find_pg_bin_dir"]

_PG_CTL_TIMEOUT_S = 60
_KILL_TIMEOUT_S = 10.0
_POLL_INTERVAL_S = 0.02
_LOG_TAIL_BYTES = 4000
# sun_path is 108 bytes on Linux including the NUL terminator.
_MAX_SOCKET_PATH = 107
_SYSTEM_USER = "postgres"

# Clusters that are running or own a temp dir; torn down at interpreter exit
# so a failing test cannot leak a postmaster or a data directory.
_LIVE: set[PostgresCluster] = set()
_LIVE_LOCK = threading.Lock()


def _close_all_live() -> None:
    with _LIVE_LOCK:
        clusters = list(_LIVE)
    for cluster in clusters:
        cluster.close(fast=True)


atexit.register(_close_all_live)


def find_pg_bin_dir() -> Path:
    """Directory holding ``initdb``/``pg_ctl``: newest Debian install, else PATH."""
    versioned: list[tuple[int, Path]] = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        version = candidate.parent.name
        if (
            version.isdigit()
            and (candidate / "initdb").is_file()
            and (candidate / "pg_ctl").is_file()
        ):
            versioned.append((int(version), candidate))
    if versioned:
        return max(versioned)[1]
    initdb = shutil.which("initdb")
    if initdb is None or shutil.which("pg_ctl") is None:
        raise FileNotFoundError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in "
            "/usr/lib/postgresql/*/bin or on PATH"
        )
    return Path(initdb).parent


def _valid_identifier(name: str) -> str:
    # URLs are built by string formatting, so keep names URL- and SQL-safe.
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise ValueError(
            f"invalid database name {name!r}: use [A-Za-z_][A-Za-z0-9_]*, max 63 chars"
        )
    return name


def _process_state(pid: int) -> str | None:
    """Linux process state letter (``Z`` = zombie), or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return "?"
    # The command name may contain spaces/parens; the state follows the last ')'.
    return stat.rsplit(")", 1)[1].split()[0]


def _is_alive(pid: int) -> bool:
    """True if ``pid`` runs; zombies count as dead.

    A SIGKILLed postmaster is reparented to PID 1, which (in containers) may
    never reap it, so a plain ``kill(pid, 0)`` would report it alive forever.
    """
    if Path("/proc/self/stat").exists():
        state = _process_state(pid)
        return state is not None and state != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _children_of(pid: int) -> list[int]:
    """PIDs of live direct children of ``pid`` (Linux /proc scan; [] elsewhere)."""
    children: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return children
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name: state, ppid, ...
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def _kill_server_processes(postmaster: int) -> None:
    """SIGKILL a postmaster and every backend it started, and wait for them.

    Backends run in their own sessions, so killing the postmaster's process
    group would miss them; and a surviving backend keeps the shared memory
    segment attached, which makes the next postmaster refuse to start.
    SIGSTOP first so the postmaster cannot fork while we list its children.
    """
    try:
        os.kill(postmaster, signal.SIGSTOP)
    except ProcessLookupError:
        return
    targets = [postmaster, *_children_of(postmaster)]
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + _KILL_TIMEOUT_S
    while any(_is_alive(pid) for pid in targets):
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"postgres processes {targets} still alive {_KILL_TIMEOUT_S:.0f}s after SIGKILL"
            )
        time.sleep(_POLL_INTERVAL_S)


def _read_postmaster_pid(data_dir: Path) -> int | None:
    try:
        first_line = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
    except OSError:
        return None
    try:
        return int(first_line.strip())
    except ValueError:
        return None


def _watchdog_main() -> None:
    """Entry point of the per-cluster watchdog process (see ``_spawn_watchdog``).

    argv: data_dir, then directories to delete. Blocks until stdin reaches
    EOF, which happens when the owning test process exits for any reason,
    including SIGKILL, when atexit handlers never run.
    """
    # Ctrl-C on pytest must not kill us before the parent has cleaned up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    data_dir, *dirs = sys.argv[1:]
    sys.stdin.buffer.read()
    pid = _read_postmaster_pid(Path(data_dir))
    if pid is not None and _is_alive(pid):
        _kill_server_processes(pid)
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)


class PostgresCluster:
    """A private PostgreSQL cluster listening on 127.0.0.1:<free port>.

    As root the server must run as the ``postgres`` system user, which cannot
    reach pytest's mode-0700 ``/tmp/pytest-of-root`` directories, so the
    cluster then lives in a fresh ``/tmp/kizuna-pg-*`` directory (removed by
    ``close()``) instead of under ``base_dir``. Otherwise it lives under
    ``base_dir`` directly.

    The server runs with ``fsync=on`` and ``synchronous_commit=on`` so that
    committed data survives ``kill()`` (SIGKILL) followed by ``start()``.
    """

    def __init__(self, base_dir: Path, port: int | None = None) -> None:
        self._bin_dir = find_pg_bin_dir()
        self._as_system_user = os.geteuid() == 0
        self._owned_dirs: list[Path] = []
        if self._as_system_user:
            self._pw = pwd.getpwnam(_SYSTEM_USER)
            self._root_dir = Path(tempfile.mkdtemp(prefix="kizuna-pg-", dir="/tmp"))
            self._owned_dirs.append(self._root_dir)
            os.chown(self._root_dir, self._pw.pw_uid, self._pw.pw_gid)
            self._root_dir.chmod(0o755)
        else:
            self._root_dir = Path(base_dir).resolve()
            self._root_dir.mkdir(parents=True, exist_ok=True)
        self._data_dir = self._root_dir / "data"
        self._port = port if port is not None else free_port()
        self._socket_dir = self._choose_socket_dir()
        self._log_path = self._root_dir / "postgres.log"
        self._closed = False
        self._watchdog = self._spawn_watchdog()
        with _LIVE_LOCK:
            _LIVE.add(self)

    # -- properties -------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def socket_dir(self) -> Path:
        return self._socket_dir

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def pid(self) -> int | None:
        """PID of the running postmaster, or None."""
        pid = self._pid_from_file()
        return pid if pid is not None and _is_alive(pid) else None

    @property
    def is_running(self) -> bool:
        return self.pid is not None

    def url_for(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self._port}/{_valid_identifier(name)}"

    # -- lifecycle --------------------------------------------------------

    def start(self) -> None:
        """initdb on first use, then start and wait until accepting connections."""
        if self._closed:
            raise RuntimeError("PostgresCluster is closed")
        if self.is_running:
            raise RuntimeError(f"postgres already running on port {self._port}")
        if not (self._data_dir / "PG_VERSION").exists():
            self._initdb()
        server_opts = [
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"port={self._port}",
            "-c", f"unix_socket_directories={self._socket_dir}",
            "-c", "fsync=on",
            "-c", "synchronous_commit=on",
            "-c", "max_connections=200",
        ]  # fmt: skip
        self._run(
            "pg_ctl",
            "start",
            "-D", str(self._data_dir),
            "-l", str(self._log_path),
            "-w",
            "-t", str(_PG_CTL_TIMEOUT_S),
            # pg_ctl hands -o to a shell, hence the quoting.
            "-o", shlex.join(server_opts),
        )  # fmt: skip

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions); data is kept."""
        if self.is_running:
            self._run("pg_ctl", "stop", "-D", str(self._data_dir), "-m", "fast", "-w",
                      "-t", str(_PG_CTL_TIMEOUT_S))  # fmt: skip

    def restart(self) -> None:
        """Clean stop and start on the same port with the same data."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """Simulate a crash: SIGKILL the postmaster and all its backends.

        Afterwards ``start()`` runs crash recovery on the same data.
        """
        pid = self._pid_from_file()
        if pid is not None and _is_alive(pid):
            _kill_server_processes(pid)
        self._remove_stale_lock_files()

    def close(self, *, fast: bool = False) -> None:
        """Stop the server (kill it if ``fast``) and delete any temp dirs it created."""
        if self._closed:
            return
        try:
            if fast:
                self.kill()
            else:
                try:
                    self.stop()
                except Exception:
                    # A wedged server must not keep its directory alive.
                    self.kill()
        finally:
            self._closed = True
            for path in self._owned_dirs:
                shutil.rmtree(path, ignore_errors=True)
            self._stop_watchdog()
            with _LIVE_LOCK:
                _LIVE.discard(self)

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"PostgresCluster(127.0.0.1:{self._port}, data_dir={str(self._data_dir)!r}, {state})"

    # -- databases --------------------------------------------------------

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name`` and return its connection URL."""
        ident = _valid_identifier(name)
        # CREATE DATABASE cannot run inside a transaction block.
        with psycopg.connect(self.url_for("postgres"), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(ident)))
        return self.url_for(ident)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE ``name`` if it exists, disconnecting its sessions."""
        ident = _valid_identifier(name)
        with psycopg.connect(self.url_for("postgres"), autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(ident))
            )

    # -- internals --------------------------------------------------------

    def _spawn_watchdog(self) -> subprocess.Popen[bytes]:
        """Start a helper that cleans up if this process dies without close().

        atexit covers normal exits and failing tests; the watchdog covers
        SIGKILL of the test runner (e.g. a CI timeout). It holds the read end
        of a pipe and acts on EOF. Its own session keeps terminal signals away.
        """
        code = "from kizuna_kit.testing.postgres import _watchdog_main; _watchdog_main()"
        # The child must import this package from wherever we imported it.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        return subprocess.Popen(
            [sys.executable, "-c", code, str(self._data_dir), *map(str, self._owned_dirs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )

    def _stop_watchdog(self) -> None:
        # Everything is already cleaned up, so EOF makes it exit with no work.
        watchdog = self._watchdog
        if watchdog.stdin is not None:
            watchdog.stdin.close()
        try:
            watchdog.wait(timeout=_KILL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()

    def _choose_socket_dir(self) -> Path:
        preferred = self._root_dir / "sock"
        if len(f"{preferred}/.s.PGSQL.{self._port}") <= _MAX_SOCKET_PATH:
            socket_dir = preferred
            socket_dir.mkdir(exist_ok=True)
        else:
            # Deep pytest tmp paths overflow sun_path; fall back to a short dir.
            socket_dir = Path(tempfile.mkdtemp(prefix="kizuna-pgs-", dir="/tmp"))
            self._owned_dirs.append(socket_dir)
        if self._as_system_user:
            os.chown(socket_dir, self._pw.pw_uid, self._pw.pw_gid)
        return socket_dir

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D", str(self._data_dir),
            "-A", "trust",
            "-U", "postgres",
            "-E", "UTF8",
            # C locale: same collation everywhere, independent of host locales.
            "--locale=C",
            # Only skips fsync of initdb's own files; the server runs with fsync=on.
            "--no-sync",
        )  # fmt: skip

    def _run(self, tool: str, *args: str) -> None:
        cmd: Sequence[str] = [str(self._bin_dir / tool), *args]
        kwargs: dict[str, Any] = {}
        env = dict(os.environ)
        if self._as_system_user:
            # PostgreSQL refuses to run as root; drop to the postgres user
            # with its own group and no supplementary root groups.
            kwargs.update(user=self._pw.pw_uid, group=self._pw.pw_gid, extra_groups=[])
            env.update(HOME=self._pw.pw_dir, USER=_SYSTEM_USER, LOGNAME=_SYSTEM_USER)
        # Stray PG* variables (e.g. PGDATA, PGPORT) must not redirect the tools.
        for key in [k for k in env if k.startswith("PG")]:
            del env[key]
        result = subprocess.run(
            cmd,
            cwd=self._root_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=_PG_CTL_TIMEOUT_S + 30,
            **kwargs,
        )
        if result.returncode != 0:
            output = result.stdout.decode("utf-8", errors="replace")
            raise RuntimeError(
                f"{shlex.join(cmd)} failed with exit code {result.returncode}\n"
                f"{output}\n--- server log tail ---\n{self.log_tail()}"
            )

    def _pid_from_file(self) -> int | None:
        return _read_postmaster_pid(self._data_dir)

    def _remove_stale_lock_files(self) -> None:
        # The dead postmaster may linger as an unreaped zombie whose PID still
        # answers kill(pid, 0); PostgreSQL would then refuse to start, so drop
        # the lock files once we know every server process is gone.
        for lock in (
            self._data_dir / "postmaster.pid",
            self._socket_dir / f".s.PGSQL.{self._port}.lock",
            self._socket_dir / f".s.PGSQL.{self._port}",
        ):
            lock.unlink(missing_ok=True)

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        """Last ``max_bytes`` of the server log, for error messages."""
        try:
            with open(self._log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - max_bytes))
                return fh.read().decode("utf-8", errors="replace")
        except OSError as err:
            return f"<no log at {self._log_path}: {err}>"
