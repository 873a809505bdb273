"""Rollout controllers in local processes: the process's entry point, and the manager's `ProcessLink` to it.

Messages on the pipe: manager -> controller `("play", (gid, tid, noise_levels, step))`, `("weights", (state_dict,
version))`, `("stop", None)`; controller -> manager `(kind, gid, payload)` with kind `ready`, `group`, `version` or
`error`. The link reports `dead` when the pipe breaks, which is how a SIGKILL is noticed."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue as queue_module
import signal
import threading
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from toolgym.agent.rollout import RolloutConfig
from toolgym.policy.base import Policy
from toolgym.rl.controller import RolloutController
from toolgym.rl.manager import ManagerConfig
from toolgym.tasks.model import Task


def _controller_process(conn: Connection, cid: int, tasks: Sequence[Task], policy_factory: Callable[[], Policy],
                        cfg: ManagerConfig, rollout: RolloutConfig) -> None:
    """Entry point of a controller process: warm up, report ready, then serve the manager's messages."""
    try:
        controller = RolloutController(cid, tasks, policy_factory, cfg, rollout)
        controller.warm()
    except Exception:
        conn.send(("error", None, traceback.format_exc()))
        return
    conn.send(("ready", None, os.getpid()))
    asyncio.run(_serve(controller, conn))


async def _serve(controller: RolloutController, conn: Connection) -> None:
    """Play assigned groups concurrently and send each back when done; apply weights in message order; exit the
    process on `stop` or when the manager's end of the pipe closes."""
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def read() -> None:
        try:
            while True:
                message = conn.recv()
                loop.call_soon_threadsafe(inbox.put_nowait, message)
        except (EOFError, OSError):
            loop.call_soon_threadsafe(inbox.put_nowait, ("stop", None))

    async def play(gid: int, *args: Any) -> None:
        try:
            group = await controller.play(gid, *args)
        except Exception:
            conn.send(("error", gid, traceback.format_exc()))
        else:
            conn.send(("group", gid, group))

    threading.Thread(target=read, daemon=True, name="controller-inbox").start()
    running: set[asyncio.Task] = set()
    while True:
        kind, payload = await inbox.get()
        if kind == "play":
            task = asyncio.ensure_future(play(*payload))
            running.add(task)
            task.add_done_callback(running.discard)
        elif kind == "weights":
            await asyncio.to_thread(controller.set_weights, *payload)
            conn.send(("version", None, payload[1]))
        else:
            # Stop now: groups in flight stay pending in the manager (regenerated on resume), so there is nothing to
            # finish, and unwinding episodes mid-batch would only race the policy thread.
            os._exit(0)


class ProcessLink:
    """A controller in a local process, reached through a pipe; a reader thread turns its messages into events and
    reports `dead` once the pipe breaks (the process exited or was killed)."""

    def __init__(self, cid: int, context: multiprocessing.context.BaseContext, args: tuple, events: queue_module.Queue):
        self.cid = cid
        self.events = events
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_controller_process, args=(child, cid, *args), daemon=True,
                                       name=f"rollout-controller-{cid}")
        self.process.start()
        child.close()
        self.send_lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True, name=f"controller-{cid}-reader").start()

    def _read(self) -> None:
        try:
            while True:
                kind, gid, payload = self.conn.recv()
                self.events.put((self.cid, kind, (gid, payload)))
        except Exception as exc:  # EOF, a reset pipe, or a message cut short by the controller's death
            self.events.put((self.cid, "dead", repr(exc)))

    def _send(self, message: tuple[str, Any]) -> None:
        try:
            with self.send_lock:
                self.conn.send(message)
        except OSError:
            pass  # the controller is gone; the reader reports it

    def assign(self, gid: int, tid: str, noise_levels: dict[str, float] | None, step: int) -> None:
        """Have the controller play group `gid` of task `tid`."""
        self._send(("play", (gid, tid, noise_levels, step)))

    def publish(self, state_dict: dict[str, Any], version: int) -> None:
        """Send new weights; the controller applies them before any later assignment."""
        self._send(("weights", (state_dict, version)))

    def kill(self) -> None:
        """SIGKILL the controller process (tests and chaos drills)."""
        os.kill(self.process.pid, signal.SIGKILL)

    def close(self) -> None:
        """Ask the controller to stop, then make sure its process is gone."""
        self._send(("stop", None))
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.conn.close()
