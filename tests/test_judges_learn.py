"""RL makes a judge right: the summary stage of Heavy Thinking (heavy.summary_rl) and self-verification
(rl.self_verify), each trained by the real asynchronous runtime (RolloutManager, SampleQueue, GSPO Trainer) from a
warm-up that reads the prompt with the wrong habit (rl.switchboard.warm_judges: right one time in four).

Summary stage: two candidates, one pressed the asked button (it passes) and one pressed nothing; the summary chooses
by calling choose_candidate, the choice is committed onto a fresh environment and the verifier's verdict is the
reward. Measured (30 synchronous steps, lr 1e-3): the exact probability of choosing the passing candidate went from
0.16 to 0.94-0.97 on every case. Before unusable output earned no reward, RL learned to write it instead (the
self-consistency fallback picks candidate 1, right half the time) and stalled at 0.5; streaming at staleness 0, one
run of two collapsed onto always choosing candidate 1.

Self-verification: the policy judges fixed episodes, half that pressed the asked button (passed) and half that
pressed nothing (failed), each group `group_size` judgments of one episode; the reward is agreement with the
verifier. Measured (30 synchronous steps, lr 2e-3, manager seeds 0-2): the exact probability of the right verdict
went from 0.10 to 0.90 / 0.92 / 0.98 (mean over the 8 episodes). With groups of one judgment of each of 8 episodes
instead, three runs ended at 0.50 (a constant verdict), 0.65 and 0.79. The judged episodes are fixed here because the
policy's own episodes drift as RL also trains the task (tests/test_self_verify.py checks that mixing). Judge quality
is read exactly (`judge_probabilities`), not sampled.
"""

from __future__ import annotations

from statistics import mean

from toolgym.heavy.summary_rl import SummaryGame
from toolgym.policy.hf import HFPolicy, load_tokenizer
from toolgym.rl.queue import SampleGroup
from toolgym.rl.runtime_local import TrainingRun
from toolgym.rl.self_verify import SelfVerification, judge_episode
from toolgym.rl.switchboard import (
    CHOICE_CONFIG,
    ONE_BATCH,
    PRECISION,
    choice_cases,
    choice_pairs,
    judge_probabilities,
    judge_rl_config,
    pressed_episode,
    verdict_pairs,
)
from toolgym.rl.trainer import Trainer


def _train(warm, tmp_path, tasks, play, lr):
    cfg = judge_rl_config(warm, tmp_path / "rl", steps=30, lr=lr)
    trainer = Trainer(cfg.model, cfg.trainer)
    summary = TrainingRun(cfg, tasks, HFPolicy(warm, constrain="none", precision=PRECISION, max_batch_tokens=ONE_BATCH), trainer, show_progress=False, play=play).run()
    assert summary.steps >= 10, summary.stopped_reason
    trainer.model.save_pretrained(tmp_path / "after")
    load_tokenizer(warm).save_pretrained(tmp_path / "after")
    return tmp_path / "after"


def test_summary_rl_learns_to_choose_the_passing_candidate(judges, tmp_path, one_thread):
    tasks, warm = judges
    cases = choice_cases(tasks)
    before = judge_probabilities(warm, choice_pairs(tasks))
    after = judge_probabilities(_train(warm, tmp_path, [c.task for c in cases], SummaryGame(cases, CHOICE_CONFIG),
                                       1e-3), choice_pairs(tasks))
    assert mean(before) < 0.35, f"the warm-up should choose below chance, got {before}"
    assert mean(after) >= 0.8 and min(after) > 0.5, f"choices before RL {before}, after {after}"


class JudgeFixedEpisodes:
    """A group player whose group `gid` is the policy's judgments of episode `gid` (cyclically) of a fixed set."""

    def __init__(self, episodes):
        self.episodes = episodes

    async def __call__(self, client, gid, task, cfg, rollout, noise_levels, step):
        group = SampleGroup(group_id=f"g{gid}", task_id=task.id, domain=task.domain, trajectories=self.episodes,
                            created_step=step)
        return [await judge_episode(client, group, gid % len(self.episodes), cfg.group_size, SelfVerification())]


def test_self_verification_rl_learns_to_agree_with_the_verifier(judges, tmp_path, one_thread):
    tasks, warm = judges
    episodes = [pressed_episode(t, pressed) for t in tasks for pressed in (True, False)]
    before = judge_probabilities(warm, verdict_pairs(tasks))
    after = judge_probabilities(_train(warm, tmp_path, tasks, JudgeFixedEpisodes(episodes), 2e-3),
                                verdict_pairs(tasks))
    assert mean(before) < 0.35, f"the warm-up should judge below chance, got {before}"
    assert mean(after) >= 0.8 and min(after) > 0.5, f"verdicts before RL {before}, after {after}"
