"""The program that runs inside every sandbox (as its unprivileged user, passed to `python -I -S -c`): it reads one
JSON request a line on stdin and writes one JSON reply a line on stdout. Standard library only.

Every command it starts gets the sandbox's resource limits and is killed at its timeout; after each command every
other process in the sandbox's PID namespace (anything the command left running) is killed too.
"""

import fnmatch
import json
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import time

WORKSPACE = "/work"
SCRATCH = "/tmp"
SKIP_DIRS = {"__pycache__"}


class Refused(Exception):
    """A request the sandbox declines; its message goes back to the agent."""


def limit_child(limits):
    """preexec hook: resource limits and a session of its own for a command."""
    os.setsid()
    mib = 1024 * 1024
    for name, value in (("RLIMIT_AS", limits["memory_mib"] * mib), ("RLIMIT_NPROC", limits["processes"]),
                        ("RLIMIT_CPU", limits["cpu_s"]), ("RLIMIT_FSIZE", limits["file_mib"] * mib),
                        ("RLIMIT_NOFILE", limits["open_files"]), ("RLIMIT_CORE", 0)):
        resource.setrlimit(getattr(resource, name), (value, value))


def kill_others():
    """SIGKILL every process of this PID namespace but its init (pid 1) and this supervisor, until none is left."""
    me = os.getpid()
    for _ in range(50):
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        reap()
        time.sleep(0.01)


def reap():
    """Collect exited children so that they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def execute(argv, limits, timeout, max_output, env=None):
    """Run argv with limits; stdout and stderr merged, the first `max_output` bytes kept."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=WORKSPACE, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=lambda: limit_child(limits), env=env)
    fd = proc.stdout.fileno()
    kept, total, timed_out, exited_at = bytearray(), 0, False, None
    while True:
        now = time.monotonic()
        if now - start > timeout:
            timed_out = True
            break
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > 0.2:
            break
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                if exited_at is not None or proc.poll() is not None:
                    break
                continue
            total += len(chunk)
            if len(kept) < max_output:
                kept += chunk[: max_output - len(kept)]
    kill_others()
    proc.stdout.close()
    code = proc.wait()
    return {"exit_code": None if timed_out else code, "timed_out": timed_out, "output": kept.decode("utf-8", "replace"),
            "truncated": total > len(kept), "output_bytes": total, "seconds": round(time.monotonic() - start, 3)}


def inside(path, writable=False):
    """An absolute path for `path` (relative paths are taken from the workspace); writes only inside the workspace."""
    full = os.path.realpath(os.path.join(WORKSPACE, path))
    if writable and not (full == WORKSPACE or full.startswith(WORKSPACE + "/")):
        raise Refused(f"{path}: only files inside {WORKSPACE} can be written")
    return full


def walk(root):
    """Relative paths of the files under root, sorted, without caches."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        out += [os.path.relpath(os.path.join(dirpath, f), root) for f in sorted(filenames)]
    return out


def op_run(req, limits):
    return execute(["/bin/bash", "-c", req["command"]], limits, req["timeout"], req["max_output"])


def op_tests(req, limits):
    result_file = os.path.join(SCRATCH, ".toolgym-test-results.json")
    if os.path.exists(result_file):
        os.unlink(result_file)
    argv = [sys.executable, "-c", req["runner"], result_file, *req["names"]]
    run = execute(argv, limits, req["timeout"], req["max_output"], env=dict(os.environ))
    try:
        with open(result_file) as f:
            run["results"] = json.load(f)
        os.unlink(result_file)
    except (OSError, ValueError):
        run["results"] = None
    return run


def op_read(req, limits):
    path = inside(req["path"])
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    start = max(1, req.get("start") or 1)
    end = min(len(lines), req.get("end") or len(lines))
    body = "\n".join(f"{i}\t{lines[i - 1]}" for i in range(start, end + 1))
    cut = len(body) > req["max_output"]
    return {"path": req["path"], "start": start, "end": end, "lines": len(lines), "text": body[: req["max_output"]],
            "truncated": cut}


def op_write(req, limits):
    path = inside(req["path"], writable=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(req["content"])
    return {"path": req["path"], "bytes": len(req["content"].encode())}


def op_replace(req, limits):
    path = inside(req["path"], writable=True)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    count = text.count(req["old"])
    if count != 1:
        raise Refused(f"{req['path']}: the text to replace occurs {count} times; it must occur exactly once")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(req["old"], req["new"]))
    return {"path": req["path"], "replaced": 1}


def op_list(req, limits):
    root = inside(req.get("path") or ".")
    names = [n for n in walk(root) if fnmatch.fnmatch(n, req.get("glob") or "*")]
    return {"files": names[: req["limit"]], "total": len(names), "truncated": len(names) > req["limit"]}


def op_search(req, limits):
    try:
        pattern = re.compile(req["pattern"])
    except re.error as exc:
        raise Refused(f"bad regular expression: {exc}") from None
    root = inside(req.get("path") or ".")
    files = [root] if os.path.isfile(root) else [os.path.join(root, n) for n in walk(root)
                                                 if fnmatch.fnmatch(n, req.get("glob") or "*")]
    hits, more = [], False
    for full in files:
        try:
            with open(full, encoding="utf-8", errors="replace") as f:
                for i, line in enumerate(f, 1):
                    if pattern.search(line):
                        if len(hits) == req["limit"]:
                            more = True
                            break
                        hits.append(f"{os.path.relpath(full, WORKSPACE)}:{i}: {line.rstrip()[:200]}")
        except OSError:
            continue
        if more:
            break
    return {"matches": hits, "truncated": more}


def op_put(req, limits):
    for rel, content in req["files"].items():
        path = inside(rel, writable=True)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
    return {"written": len(req["files"])}


def op_get(req, limits):
    out = {}
    for rel in req["paths"]:
        try:
            with open(inside(rel), encoding="utf-8") as f:
                out[rel] = f.read()
        except (OSError, UnicodeDecodeError):
            out[rel] = None
    return {"files": out}


def op_reset(req, limits):
    kill_others()
    for root in (WORKSPACE, SCRATCH):
        for name in os.listdir(root):
            full = os.path.join(root, name)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                os.unlink(full)
    return {"reset": True}


def op_ping(req, limits):
    return {"pid": os.getpid(), "uid": os.getuid()}


OPS = {"run": op_run, "tests": op_tests, "read": op_read, "write": op_write, "replace": op_replace, "list": op_list,
       "search": op_search, "put": op_put, "get": op_get, "reset": op_reset, "ping": op_ping}


def protect_self():
    """Make this process non-dumpable: its /proc entries (fds, memory) turn root-owned, so the commands it runs
    (same user) cannot write fake replies into its pipes or read its memory."""
    import ctypes

    pr_set_dumpable = 4
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        raise SystemExit("cannot protect the supervisor")


def main():
    protect_self()
    limits = json.loads(sys.argv[1])
    out = sys.stdout
    out.write(json.dumps({"ok": True, "ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            reply = {"ok": True, **OPS[req["op"]](req, limits)}
        except Refused as exc:
            reply = {"ok": False, "error": str(exc)}
        except (OSError, KeyError, ValueError, TypeError, subprocess.SubprocessError) as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
