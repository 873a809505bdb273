"""Real vLLM, end to end (opt-in: `make test-vllm`, which builds vLLM's own environment first).

vLLM's CPU build serves the switchboard model (rl.switchboard) as an OpenAI-compatible server in its own process and
virtual environment; toolgym's VLLMServerPolicy drives it over HTTP. Checked here: the logprobs vLLM reports for the
tokens it sampled are the model's own (what GSPO's ratio needs); async GSPO with vLLM as the rollout engine learns
the switchboard, every published version reaches the server (its /weight_info and its logprobs afterwards) and the
trajectories record the versions that produced them; the shipped base runs seeded episodes of real domains;
`toolgym train`'s `engine: vllm-server` starts and stops the
server itself, and a killed toolgym process takes its server with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from toolgym.agent.rollout import Episode, RolloutConfig, run_episodes
from toolgym.assets import TINY_BASE
from toolgym.eval.runner import evaluate
from toolgym.envs.families import open_env
from toolgym.jsonl import write_jsonl
from toolgym.policy.base import SamplingParams
from toolgym.policy.hf import HFPolicy
from toolgym.policy.vllm_server import DEFAULT_VLLM_PYTHON, VLLMServer, VLLMServerPolicy
from toolgym.rl.runtime_local import TrainingRun, train_from_config
from toolgym.rl.switchboard import ROLLOUT, pass_rate, rl_config, warm_switchboard
from toolgym.rl.trainer import Trainer

pytestmark = pytest.mark.vllm

VLLM_PYTHON = os.environ.get("TOOLGYM_VLLM_PYTHON", DEFAULT_VLLM_PYTHON)


@pytest.fixture(scope="module")
def switchboard(tmp_path_factory):
    if not Path(VLLM_PYTHON).exists():
        pytest.fail(f"no vLLM environment at {VLLM_PYTHON}: run `make vllm-env` (or `make test-vllm`)")
    return warm_switchboard(tmp_path_factory.mktemp("switchboard"), repeats=64, epochs=30, num_heads=2)


@pytest.fixture(scope="module")
def server(switchboard, tmp_path_factory):
    _, warm = switchboard
    with VLLMServer(warm, tmp_path_factory.mktemp("vllm")) as running:
        yield running


def served_logprob_gap(policy: VLLMServerPolicy, model: torch.nn.Module, tasks) -> float:
    """Largest |vLLM logprob - transformers logprob| over the sampled tokens of one episode per task."""
    trajectories = run_episodes([Episode(task=t, env=open_env(t.env), trial=0) for t in tasks], policy, ROLLOUT)
    gap = 0.0
    for segment in (s for t in trajectories for s in t.segments):
        ids = torch.tensor([segment.token_ids])
        with torch.no_grad():
            own = torch.log_softmax(model(ids).logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None])[:, 0]
        for i in range(1, len(segment.token_ids)):
            if segment.loss_mask[i]:
                gap = max(gap, abs(float(own[i - 1]) - segment.logprobs[i]))
    return gap


def test_vllm_samples_tool_calls_with_the_models_own_logprobs(switchboard, server):
    tasks, _ = switchboard
    policy = server.policy()
    reference = HFPolicy(server.served_dir, constrain="none").model
    trajectories = run_episodes([Episode(task=t, env=open_env(t.env), trial=i) for t in tasks for i in range(4)],
                                policy, ROLLOUT)
    called = [t for t in trajectories if t.n_tool_calls]
    assert len(called) >= len(trajectories) // 2, "the warmed-up switchboard model should write tool calls"
    assert all(t.min_version == 0 for t in trajectories)
    assert served_logprob_gap(policy, reference, tasks) < 1e-3


def test_async_gspo_on_vllm_rollouts_learns_and_every_version_reaches_the_server(switchboard, server, tmp_path):
    tasks, warm = switchboard
    torch.manual_seed(0)
    cfg = rl_config(warm, tmp_path / "rl", steps=12, max_wait_seconds=60)
    trainer = Trainer(cfg.model, cfg.trainer)
    policy = server.policy()
    before = pass_rate(policy, tasks, 32, ROLLOUT)
    run = TrainingRun(cfg, tasks, policy, trainer, show_progress=False)
    summary = run.run()
    assert summary.steps == cfg.steps, summary.stopped_reason
    assert policy.version == trainer.version == summary.steps
    assert policy.served_version() == str(summary.steps), "the server holds another version than the trainer's"
    rows = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    staleness = {int(k) for row in rows for k in row["staleness"]}
    assert staleness <= {0, 1}, f"trained on trajectories staler than max_staleness: {sorted(staleness)}"
    assert served_logprob_gap(policy, trainer.model.eval(), tasks) < 1e-3, "the server serves stale weights"
    after = pass_rate(policy, tasks, 32, ROLLOUT)
    assert before < 0.35, f"the warm-up should leave the policy at or below chance, got {before:.2f}"
    assert after >= 0.4 and after - before >= 0.2, f"pass rate {before:.2f} before RL, {after:.2f} after"


def test_the_shipped_base_served_by_vllm_runs_seeded_episodes_of_real_domains(tasks, tmp_path):
    """The embedded default behind vLLM: many concurrent seeded episodes with prompts of hundreds of tokens (the
    load that split prefills and once killed the CPU engine) all finish, and the base writes tool calls."""
    chosen = [t for name in sorted(tasks) for t in tasks[name][:3]]
    with VLLMServer(TINY_BASE, tmp_path / "vllm") as running:
        run = evaluate(running.policy(), chosen, k=2, config=RolloutConfig(
            max_turns=3, sampling=SamplingParams(temperature=0.7, max_new_tokens=96, seed=0)))
    errors = [t.error for t in run.trajectories if t.termination == "error"]
    assert not errors, errors[:3]
    assert max(len(s.token_ids) for t in run.trajectories for s in t.segments) > 300
    assert sum(t.n_tool_calls for t in run.trajectories) > 0


def test_train_config_engine_vllm_server_starts_trains_and_stops_it(switchboard, tmp_path):
    tasks, warm = switchboard
    write_jsonl(tmp_path / "tasks.jsonl", tasks)
    cfg = rl_config(warm, tmp_path / "rl", steps=3).model_copy(
        update={"engine": "vllm-server", "tasks": str(tmp_path / "tasks.jsonl")})
    summary = train_from_config(cfg, show_progress=False)
    assert summary.steps == 3, summary.stopped_reason
    log = (tmp_path / "rl" / "vllm" / "vllm.log").read_text()
    assert "reload" in log.lower(), "the trainer's weights never reached the server"
    assert not list((tmp_path / "rl" / "vllm" / "published").glob("v[0-2]")), "old published copies were kept"


def test_a_killed_toolgym_process_leaves_no_server_behind(tmp_path):
    script = ("import sys, time\nfrom pathlib import Path\nfrom toolgym.assets import TINY_BASE\n"
              "from toolgym.policy.vllm_server import VLLMServer\n"
              "server = VLLMServer(TINY_BASE, Path(sys.argv[1])).start()\n"
              "print(server.process.pid, flush=True)\ntime.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    server_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and psutil.pid_exists(server_pid) and \
            psutil.Process(server_pid).status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.5)
    assert not psutil.pid_exists(server_pid) or psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE
