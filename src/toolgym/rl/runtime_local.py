"""The local runtime: RolloutManager in a background thread, SampleQueue in memory, Trainer in the main thread.

Async mode streams groups (no barrier; rollouts pick up new weights between generation batches, so one
trajectory can span several policy versions). Sync mode is the baseline: generate a batch, wait for all of it,
train, repeat. A checkpoint holds the trainer, the queue contents, the manager (including the ids of groups in
flight, regenerated on resume) and the ids of every trained group, so an interrupted run resumes with no group
trained twice or lost.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from contextlib import ExitStack
from collections import Counter
from functools import partial
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from toolgym.noise.curriculum import NoiseCurriculum
from toolgym.policy.base import Completion, GenerationRequest, Policy, SamplingParams
from toolgym.rl.budget import PassRateTracker
from toolgym.rl.config import RLConfig
from toolgym.rl.curriculum import TaskCurriculum
from toolgym.rl.manager import GroupPlayer, RolloutManager, play_task
from toolgym.rl.metrics import MetricsLogger
from toolgym.rl.queue import SampleGroup, SampleQueue
from toolgym.tasks.model import Task


class CheckpointError(ValueError):
    """A checkpoint's run state cannot be read back (damaged, edited, or written by an incompatible version)."""


class TrainerLike(Protocol):
    version: int
    publish: Callable[[dict[str, Any], int], None] | None
    """Called with (weights, version) after every step; a run wires an unset hook to its rollout policy."""

    def step(self, groups: Sequence[SampleGroup]) -> dict[str, float]: ...

    def save(self, path: Path) -> None: ...

    def load(self, path: Path) -> None: ...


class SyncedPolicy:
    """A policy whose generation and weight updates never overlap (the trainer publishes from another thread)."""

    def __init__(self, policy: Policy):
        self.inner = policy
        self.tokenizer = getattr(policy, "tokenizer", None)
        self.lock = threading.Lock()

    @property
    def version(self) -> int:
        return self.inner.version

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        with self.lock:
            return self.inner.generate(requests, sampling)

    def set_weights(self, state_dict: dict[str, Any], version: int) -> None:
        with self.lock:
            if hasattr(self.inner, "set_weights"):
                self.inner.set_weights(state_dict, version)
            else:
                self.inner.version = version


class Stalled(RuntimeError):
    """The trainer got no usable group for too long (e.g. every rollout fails, so rewards carry no signal)."""


class RunState(BaseModel):
    step: int = 0
    trained: list[str] = Field(default_factory=list)
    idle_seconds: float = 0.0
    wall_seconds: float = 0.0


class RunSummary(BaseModel):
    steps: int
    trained_groups: int
    samples_per_s: float
    trainer_idle_fraction: float
    queue: dict[str, Any]
    interrupted: bool = False
    stopped_reason: str | None = None
    regenerated_groups: int = 0
    """Groups re-issued because the rollout controller playing them died (controllers runtime only)."""


class TrainingRun:
    """One RL run with injected policy and trainer (see `train_from_config` for the real ones)."""

    def __init__(self, cfg: RLConfig, tasks: Sequence[Task], policy: Policy, trainer: TrainerLike,
                 show_progress: bool = True, play: GroupPlayer = play_task):
        self.cfg = cfg
        self.play = play
        self.out = Path(cfg.out)
        self.policy = SyncedPolicy(policy)
        self.trainer = trainer
        self.state = RunState()
        self.show_progress = show_progress
        self.tracker = PassRateTracker()
        self.curriculum = TaskCurriculum() if cfg.curriculum else None
        self.noise = (NoiseCurriculum(levels={"instruction": cfg.noise.instruction, "tool": cfg.noise.tool},
                                      step=cfg.noise.step, gap_threshold=cfg.noise.gap_threshold)
                      if cfg.noise.enabled else None)
        self.manager = self._make_manager(tasks)
        self.queue = SampleQueue(cfg.max_staleness, oversample=cfg.oversample, seed=cfg.seed,
                                 on_stale=self.manager.regenerate)
        self.manager.queue = self.queue

    def _make_manager(self, tasks: Sequence[Task]) -> RolloutManager:
        """The rollout manager of this run (runtimes that run rollouts elsewhere return their own)."""
        return RolloutManager(tasks, self.policy, None, self.cfg.manager, self.cfg.rollout, self.tracker,
                              self.curriculum, self.noise, step=lambda: self.state.step,
                              max_queued=self.cfg.groups_per_step * (self.cfg.max_staleness + 1), play=self.play)

    @property
    def ckpt(self) -> Path:
        return self.out / "checkpoint"

    def checkpoint(self) -> None:
        """Write the whole run state atomically (a new folder renamed over the old one)."""
        tmp = self.out / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.trainer.save(tmp / "trainer")
        manager, queue = self.manager.snapshot()
        state = {"run": self.state.model_dump(), "queue": queue, "manager": manager,
                 "curriculum": self.curriculum.model_dump() if self.curriculum else None,
                 "noise": self.noise.model_dump() if self.noise else None}
        (tmp / "state.json").write_text(json.dumps(state, default=str))
        shutil.rmtree(self.ckpt, ignore_errors=True)
        tmp.rename(self.ckpt)

    def restore(self) -> None:
        path = self.ckpt / "state.json"
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint to resume from in {self.ckpt}")
        try:
            state = json.loads(path.read_text())
            run_state = RunState.model_validate(state["run"])
            curriculum = TaskCurriculum.model_validate(state["curriculum"]) if state["curriculum"] else None
            noise = NoiseCurriculum.model_validate(state["noise"]) if state["noise"] else None
            self.queue.load_state_dict(state["queue"])
            self.manager.load_state_dict(state["manager"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{path} is not a run state this version of toolgym wrote (damaged or edited?): "
                                  f"{type(e).__name__}: {e}") from e
        self.trainer.load(self.ckpt / "trainer")
        if hasattr(self.trainer, "model"):
            self.policy.set_weights(self.trainer.model.state_dict(), self.trainer.version)
        else:
            self.policy.set_weights({}, self.trainer.version)
        self.state = run_state
        if self.curriculum and curriculum:
            self.curriculum = self.manager.curriculum = curriculum
        if self.noise and noise:
            self.noise = self.manager.noise = noise

    def _collect(self) -> tuple[list[SampleGroup], float]:
        """Groups for one step and the seconds the trainer waited for them.

        Raises Stalled when no trainable group (one with reward variance) arrives within max_wait_seconds."""
        start = time.perf_counter()
        groups: list[SampleGroup] = []
        while len(groups) < self.cfg.groups_per_step:
            if time.perf_counter() - start > self.cfg.max_wait_seconds:
                stats = self.queue.stats()
                why = ("no group finished (rollouts are slower than max_wait_seconds allows)" if not stats.put
                       else f"of {stats.put} finished groups, {stats.dropped_no_signal} had equal rewards (no signal) "
                            f"and {stats.dropped_stale} were staler than max_staleness")
                raise Stalled(f"no trainable group within {self.cfg.max_wait_seconds:.0f}s: {why}")
            missing = self.cfg.groups_per_step - len(groups)
            if self.manager.error is not None:
                raise RuntimeError("the rollout manager failed") from self.manager.error
            if self.cfg.mode == "sync" and len(self.queue) < missing:
                self.manager.generate(missing)
            groups.extend(self.queue.get(self.trainer.version, missing, timeout=0.5))
        return groups, time.perf_counter() - start

    def _after_step(self, groups: list[SampleGroup], stats: dict[str, float], waited: float,
                    log: MetricsLogger) -> None:
        self.state.step += 1
        self.state.trained.extend(g.group_id for g in groups)
        self.state.idle_seconds += waited
        trajs = [t for g in groups if g.kind == "task" for t in g.trajectories]
        judged = [t.reward for g in groups if g.kind == "verify" for t in g.trajectories]
        by_domain: dict[str, list[float]] = {}
        for t in trajs:
            by_domain.setdefault(t.domain, []).append(float(t.passed))
        clean = [t.reward for t in trajs if not t.noise]
        noisy = [t.reward for t in trajs if t.noise]
        if self.noise and clean and noisy:
            self.noise.update(sum(clean) / len(clean), sum(noisy) / len(noisy))
        if self.curriculum:
            self.curriculum.update(sum(t.passed for t in trajs) / max(1, len(trajs)))
        q = self.queue.stats()
        rollouts = self.manager.take_recent_rewards()
        verdicts = self.manager.take_recent_auxiliary().get("verify", [])
        row = {
            "step": self.state.step, "version": self.trainer.version, "reward": sum(t.reward for t in trajs) / max(1, len(trajs)),
            "rollout_reward": sum(rollouts) / len(rollouts) if rollouts else None, "rollouts": len(rollouts),
            "pass_rate_by_domain": {d: sum(v) / len(v) for d, v in by_domain.items()},
            "staleness": dict(Counter(self.trainer.version - 1 - t.min_version for t in trajs)),
            "queue_depth": q.depth, "dropped_stale": q.dropped_stale, "dropped_no_signal": q.dropped_no_signal,
            "trainer_idle_fraction": self.state.idle_seconds / max(1e-9, self.state.wall_seconds),
            "wait_seconds": waited, "noise_levels": dict(self.noise.levels) if self.noise else {},
            "verify_accuracy": sum(verdicts) / len(verdicts) if verdicts else None, "verify_judgments": len(verdicts),
            "verify_trained": len(judged),
            **stats,
        }
        log.write(row)

    def run(self, resume: bool = False, stop_after: int | None = None,
            on_step: Callable[[int], None] | None = None) -> RunSummary:
        """Train until `cfg.steps` (or `stop_after` steps of this call, to simulate an interruption). A trainer
        without a publish hook gets this run's rollout policy as its target."""
        if self.trainer.publish is None:
            self.trainer.publish = self.policy.set_weights
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self.restore()
        stop = threading.Event()
        producer = None
        interrupted = False
        reason = None
        done_here = 0
        with MetricsLogger(self.out, self.state.step if resume else None) as log, Progress(
                TextColumn("rl {task.fields[mode]}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(), disable=not self.show_progress, transient=True) as progress:
            job = progress.add_task("rl", total=self.cfg.steps, completed=self.state.step, mode=self.cfg.mode, info="")
            # The clock and the producer start together, after slow set-up (the logger imports tensorboard),
            # so neither mode gets a head start that would not count as trainer idle time.
            start = time.perf_counter() - self.state.wall_seconds
            if self.cfg.mode == "async":
                producer = threading.Thread(target=self.manager.run, args=(stop,), daemon=True,
                                            name="rollout-manager")
                producer.start()
            try:
                while self.state.step < self.cfg.steps:
                    if stop_after is not None and done_here >= stop_after:
                        interrupted = True
                        break
                    try:
                        groups, waited = self._collect()
                    except Stalled as exc:
                        reason = str(exc)
                        break
                    stats = self.trainer.step(groups)
                    self.state.wall_seconds = time.perf_counter() - start
                    self._after_step(groups, stats, waited, log)
                    done_here += 1
                    if self.cfg.checkpoint_every and self.state.step % self.cfg.checkpoint_every == 0:
                        self.checkpoint()
                    progress.update(job, completed=self.state.step,
                                    info=f"v{self.trainer.version} queue {len(self.queue)}")
                    if on_step:
                        on_step(self.state.step)
            finally:
                stop.set()
                self.queue.close()
                if producer is not None:
                    producer.join(timeout=60)
        if not interrupted:
            self.checkpoint()
        wall = max(self.state.wall_seconds, 1e-9)
        return RunSummary(steps=self.state.step, trained_groups=len(self.state.trained),
                          samples_per_s=len(self.state.trained) * self.cfg.manager.group_size / wall,
                          trainer_idle_fraction=self.state.idle_seconds / wall,
                          queue=self.queue.stats().model_dump(), interrupted=interrupted, stopped_reason=reason)


def configured_player(cfg: RLConfig) -> GroupPlayer:
    """The group player `cfg` asks for: the task's rollouts, plus the policy's judgments of them with self_verify."""
    from toolgym.rl.self_verify import SelfVerifyingPlayer

    return SelfVerifyingPlayer(cfg.self_verify, cfg.seed) if cfg.self_verify.ratio > 0 else play_task


def train_from_config(cfg: RLConfig, resume: bool = False, show_progress: bool = True) -> RunSummary:
    """Build the real policy (transformers or vLLM) and trainer from `cfg.model`; run on the configured runtime."""
    from toolgym.jsonl import read_jsonl
    from toolgym.policy.hf import HFPolicy
    from toolgym.rl.trainer import Trainer

    tasks = list(read_jsonl(cfg.tasks, Task))
    trainer = Trainer(cfg.model, cfg.trainer)
    with ExitStack() as stack:
        if cfg.engine == "vllm-server":
            from toolgym.policy.vllm_server import VLLMServer

            settings = cfg.vllm_server
            extra = {"python": settings.python} if settings.python else {}
            server = stack.enter_context(VLLMServer(
                Path(cfg.model), Path(cfg.out) / "vllm", memory_fraction=settings.memory_fraction,
                startup_timeout=settings.startup_timeout, **extra))
            make_policy: Callable[[], Policy] = server.policy
        elif cfg.engine == "vllm":
            from toolgym.policy.vllm import VLLMPolicy

            make_policy = partial(VLLMPolicy, cfg.model)
        else:
            make_policy = partial(HFPolicy, cfg.model, device=cfg.trainer.device, constrain=cfg.constrain,
                                  precision=cfg.trainer.precision)
        if cfg.controllers:
            from toolgym.rl.controllers import ControllerTrainingRun

            run: TrainingRun = ControllerTrainingRun(cfg, tasks, make_policy, trainer, show_progress)
        elif cfg.runtime == "ray":
            from toolgym.rl.runtime_ray import RayTrainingRun

            run = RayTrainingRun(cfg, tasks, make_policy, trainer, show_progress)
        else:
            run = TrainingRun(cfg, tasks, make_policy(), trainer, show_progress, configured_player(cfg))
        return run.run(resume=resume)
