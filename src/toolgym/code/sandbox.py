"""A sandbox per episode: bubblewrap namespaces (mount, PID, network, IPC, UTS) around an unprivileged supervisor.

The view holds the system (`/usr`) and the interpreter read-only, a writable in-memory workspace (`/work`) and
scratch space (`/tmp`), nothing else: no network (its own empty network namespace), no host home directories. The
supervisor (`supervisor.py`) runs as a user id of its own (so the process limit counts this sandbox only) with no
capabilities and no_new_privs, and gives every command limits on memory, processes, CPU time, file size and open
files, plus a wall-clock timeout. The workspace lives in the sandbox's own tmpfs and bubblewrap dies with its
parent (even on SIGKILL), so nothing outlives an episode or the process that owns it.

Without bubblewrap there is no sandbox: `SandboxUnavailable` is raised and no command ever runs unsandboxed.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SUPERVISOR = (Path(__file__).with_name("supervisor.py")).read_text()
WORKSPACE = "/work"
UID_BASE = 200_000
"""Sandboxes run as host user ids from here up (each sandbox its own id while the owner runs as root)."""


class SandboxUnavailable(RuntimeError):
    """This machine cannot provide the sandbox (bubblewrap missing or refused); nothing runs without one."""


class SandboxError(RuntimeError):
    """A sandbox stopped answering (died, broke the protocol or overran its deadline); it is no longer usable."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of every command run in a sandbox, and the size of what comes back from it."""

    memory_mib: int = 1024
    processes: int = 64
    cpu_s: int = 60
    file_mib: int = 16
    open_files: int = 256
    timeout_s: float = 30.0
    max_output: int = 8_000


def bwrap() -> str:
    """Path of the bubblewrap binary; a clear refusal where it is missing."""
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable("bubblewrap (`bwrap`) is not installed, so no sandbox can be made and toolgym "
                                 "will not run model-written commands: install it (`apt-get install -y bubblewrap`, "
                                 "or `make install`)")
    return path


def _view() -> list[str]:
    """bwrap arguments of the read-only system view: /usr, its top-level aliases, and the interpreter's prefix."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64"):
        host = Path("/") / top
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    prefix = Path(os.path.realpath(sys.base_prefix))
    if prefix.parts[1] != "usr":
        for parent in reversed(prefix.parents[:-1]):
            args += ["--perms", "0711", "--dir", str(parent)]
        args += ["--ro-bind", str(prefix), str(prefix)]
    return args


_UIDS = itertools.count()
_SPAWNER = ThreadPoolExecutor(1, thread_name_prefix="toolgym-sandbox-spawner")
"""Every sandbox is started from this one long-lived thread: bubblewrap's die-with-parent signal fires when the
*thread* that started it ends, so starting one from a short-lived worker thread would kill it early."""


def _next_uid() -> int:
    return UID_BASE + (os.getpid() % 10_000) * 1000 + next(_UIDS) % 1000


def command_line(limits: SandboxLimits, uid: int) -> list[str]:
    """The bubblewrap command of one sandbox whose supervisor runs as host user `uid` (when started by root)."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    python = os.path.join(os.path.realpath(sys.base_prefix), "bin", f"python{version}")
    argv = [bwrap(), "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try", *_view(), "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", WORKSPACE, "--chdir", WORKSPACE,
            "--clearenv", "--setenv", "PATH", f"{os.path.dirname(python)}:/usr/bin:/bin", "--setenv", "HOME",
            WORKSPACE, "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--setenv",
            "PYTHONHASHSEED", "0", "--setenv", "TMPDIR", "/tmp", "--hostname", "sandbox"]
    if os.geteuid() == 0:
        argv += ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups", "--no-new-privs",
                 "--bounding-set", "-all", "--inh-caps", "-all", "--"]
    else:
        argv[1:1] = ["--unshare-user"]
    return [*argv, python, "-I", "-S", "-c", SUPERVISOR, json.dumps(asdict(limits))]


class Sandbox:
    """One running sandbox and the line protocol to its supervisor. Not shared between episodes at once."""

    def __init__(self, proc: subprocess.Popen, uid: int, limits: SandboxLimits):
        self.proc, self.uid, self.limits = proc, uid, limits
        self.uses = 0
        self._buffer = b""
        self._lock = threading.Lock()

    @classmethod
    def launch(cls, limits: SandboxLimits | None = None) -> Sandbox:
        """Start a sandbox without waiting for it to be ready (`wait_ready`)."""
        limits = limits or SandboxLimits()
        uid = _next_uid()
        argv = command_line(limits, uid)
        proc = _SPAWNER.submit(subprocess.Popen, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE).result()
        return cls(proc, uid, limits)

    @classmethod
    def start(cls, limits: SandboxLimits | None = None, timeout: float = 30.0) -> Sandbox:
        """A started, ready sandbox (the cold path)."""
        sandbox = cls.launch(limits)
        sandbox.wait_ready(timeout)
        return sandbox

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the supervisor reports ready; a sandbox that cannot start is refused with bwrap's reason."""
        try:
            self._read_line(time.monotonic() + timeout)
        except SandboxError:
            reason = self.proc.stderr.read().decode(errors="replace").strip()
            self.close()
            raise SandboxUnavailable(f"the sandbox did not start: {reason or 'no reason given'}") from None

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read_line(self, deadline: float) -> dict[str, Any]:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.proc.kill()
                raise SandboxError("the sandbox did not answer in time and was stopped")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                self.proc.kill()
                raise SandboxError("the sandbox exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            self.close()
            raise SandboxError("the sandbox broke its protocol and was stopped") from None

    def request(self, op: str, deadline_s: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send one request to the supervisor and return its reply (`ok` False carries an `error` for the agent)."""
        with self._lock:
            if not self.alive:
                raise SandboxError("the sandbox is no longer running")
            try:
                self.proc.stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self.close()
                raise SandboxError("the sandbox exited") from None
            return self._read_line(time.monotonic() + (deadline_s or self.limits.timeout_s) + 10)

    def run(self, command: str, timeout: float | None = None, max_output: int | None = None) -> dict[str, Any]:
        """Run a bash command in the workspace with the sandbox's limits, killed at `timeout` seconds."""
        timeout = timeout or self.limits.timeout_s
        return self.request("run", timeout, command=command, timeout=timeout,
                            max_output=max_output or self.limits.max_output)

    def reset(self) -> None:
        """Empty the workspace and scratch space and stop every process but the supervisor (for recycling)."""
        reply = self.request("reset")
        if not reply.get("ok"):
            raise SandboxError(f"reset failed: {reply.get('error')}")

    def host_pids(self) -> list[int]:
        """Host pids of the sandbox's processes: bubblewrap and everything under it."""
        pids, frontier = [], [self.proc.pid]
        while frontier:
            pid = frontier.pop()
            pids.append(pid)
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            frontier += [int(c) for c in children]
        return pids

    def close(self) -> None:
        """Stop the sandbox now: SIGKILL to bubblewrap takes its PID namespace, and all in it, down."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
