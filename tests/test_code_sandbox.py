"""Security of the code sandbox: each test fails if the guard it names were removed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from toolgym.code.sandbox import Sandbox, SandboxLimits, SandboxUnavailable

COUNT_PROCS = "python -c \"import os; print(sum(p.isdigit() for p in os.listdir('/proc')))\""


@pytest.fixture
def sandbox():
    sb = Sandbox.start(SandboxLimits(memory_mib=512, processes=32, timeout_s=10))
    yield sb
    sb.close()


def test_no_network_loopback_or_outside(sandbox):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    probe = textwrap.dedent(f"""
        import os, socket
        print("interfaces", sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else
              sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]))
        for addr in [("127.0.0.1", {port}), ("1.1.1.1", 53), ("8.8.8.8", 443)]:
            try:
                socket.create_connection(addr, timeout=2).close()
                print("connected", addr)
            except OSError as exc:
                print("refused", addr, exc.errno)
    """)
    out = sandbox.run(f"python -c '{probe}'")["output"]
    listener.close()
    assert "connected" not in out
    assert out.count("refused") == 3
    assert "interfaces ['lo']" in out


def test_no_writes_outside_the_workspace(sandbox):
    target = Path("/var/tmp") / f"toolgym-shared-{uuid.uuid4().hex}"  # world-writable on the host
    target.mkdir()
    target.chmod(0o777)
    try:
        out = sandbox.run(f"touch {target}/escaped; echo x > /usr/escaped; echo x > /escaped; touch /work/inside; "
                          "ls /work")
        escaped = (target / "escaped").exists()
    finally:
        shutil.rmtree(target)
    assert not escaped
    assert not Path("/usr/escaped").exists() and not Path("/escaped").exists()
    assert "inside" in out["output"]
    refused = sandbox.request("write", path="../usr/lib/evil.py", content="x")
    assert not refused["ok"] and "only files inside /work" in refused["error"]


def test_fork_bomb_is_contained_by_the_process_limit(sandbox):
    bounded = ("python -c \"import subprocess\nn = 0\ntry:\n    for _ in range(200):\n"
               "        subprocess.Popen(['sleep', '30']); n += 1\nexcept OSError:\n    pass\nprint('forked', n)\"")
    forked = int(sandbox.run(bounded)["output"].split("forked")[1])
    assert forked < sandbox.limits.processes
    bomb = sandbox.run(":(){ :|:& };:", timeout=2)
    assert bomb["timed_out"] or bomb["exit_code"] is not None
    assert int(sandbox.run(COUNT_PROCS)["output"]) <= 4  # init, supervisor, bash, python: the bomb is gone


def test_memory_bomb_is_contained(sandbox):
    out = sandbox.run("python -c 'b = bytearray(3 * 2**30); print(\"allocated\")'")
    assert out["exit_code"] != 0 and "allocated" not in out["output"] and "MemoryError" in out["output"]
    assert sandbox.run("echo still-here")["output"] == "still-here\n"


def test_infinite_loop_is_killed_at_the_timeout(sandbox):
    start = time.monotonic()
    out = sandbox.run("python -c 'while True: pass' & while :; do :; done", timeout=1)
    assert out["timed_out"] and out["exit_code"] is None
    assert time.monotonic() - start < 3
    assert int(sandbox.run(COUNT_PROCS)["output"]) <= 4


def test_host_files_outside_the_view_are_unreadable(sandbox):
    secret = Path("/var/tmp") / f"toolgym-secret-{uuid.uuid4().hex}"
    secret.write_text("top secret")
    secret.chmod(0o644)
    try:
        out = sandbox.run(f"cat {secret}; cat /root/.bashrc; ls /root; cat /etc/passwd")["output"]
    finally:
        secret.unlink()
    assert "top secret" not in out and "root:x:0" not in out
    assert "Permission denied" in out or "No such file" in out
    assert not sandbox.request("read", path=str(secret))["ok"]


CHILD = """
import json, sys, threading, time
from toolgym.code.pool import SandboxPool
pool = SandboxPool(size=2)
pool.wait_warm()
busy = pool.acquire()
busy.request("write", path="MARKER", content="x")
threading.Thread(target=busy.run, args=("sleep 1000",), kwargs={"timeout": 900}, daemon=True).start()
time.sleep(0.3)
pids = [p for sb in [busy, *pool._fresh] for p in sb.host_pids()]
print(json.dumps({"pids": pids}), flush=True)
time.sleep(1000)
"""


def test_nothing_is_left_after_the_parent_is_killed():
    marker = f"marker-{uuid.uuid4().hex}"
    child = subprocess.Popen([sys.executable, "-c", CHILD.replace("MARKER", marker)], stdout=subprocess.PIPE, text=True)
    pids = json.loads(child.stdout.readline())["pids"]
    assert len(pids) >= 9 and all(Path(f"/proc/{p}").exists() for p in pids)  # 3 sandboxes x (bwrap, init, supervisor)
    child.send_signal(signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_running(p) for p in pids):
        time.sleep(0.05)
    assert not any(_running(p) for p in pids)
    assert not any(marker in name for root in ("/tmp", "/var/tmp", "/dev/shm") for _, _, names in os.walk(root)
                   for name in names)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def test_commands_cannot_forge_supervisor_replies(sandbox):
    forged = sandbox.run("echo '{\"ok\": true, \"files\": {}}' > /proc/2/fd/1; ls /proc/2/fd")
    assert "cannot open directory '/proc/2/fd': Permission denied" in forged["output"]
    assert sandbox.request("ping")["pid"] == 2  # the next reply is the supervisor's own


def test_missing_bubblewrap_is_refused(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailable, match="will not run model-written commands"):
        Sandbox.start()
