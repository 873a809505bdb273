"""SampleQueue: staleness bound and loss accounting under random schedules, signal filter, oversampling, blocking,
capacity eviction and exact resumption from state_dict."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter

import pytest

from toolgym.agent.trajectory import Trajectory, TurnRecord
from toolgym.rl.queue import SampleGroup, SampleQueue

JOIN_S = 10.0  # only to keep a broken queue from hanging the suite


def make_group(gid: str, version: int, rewards: tuple[float, ...] = (0.0, 1.0), domain: str = "bank",
               versions: tuple[int, ...] | None = None) -> SampleGroup:
    """A group whose trajectories have the given rewards; each trajectory one turn at `version` (or `versions[i]`)."""
    versions = versions or (version,) * len(rewards)
    trajs = [Trajectory(task_id=f"task-{gid}", domain=domain, reward=r, passed=r > 0.5,
                        turns=[TurnRecord(index=0, version=v, n_tokens=1, finish_reason="stop")])
             for r, v in zip(rewards, versions)]
    return SampleGroup(group_id=gid, task_id=f"task-{gid}", domain=domain, trajectories=trajs)


def ids(groups: list[SampleGroup]) -> list[str]:
    return [g.group_id for g in groups]


def test_group_properties():
    g = make_group("g", 0, rewards=(1.0, 0.0, 1.0), versions=(5, 3, 4))
    assert g.rewards == [1.0, 0.0, 1.0]
    assert g.min_version == 3
    assert g.has_signal
    assert not make_group("h", 0, rewards=(1.0, 1.0)).has_signal


@pytest.mark.parametrize("oversample", [None, {"bank": 3.0, "clinic": 0.5}])
@pytest.mark.parametrize("seed", range(6))
def test_random_schedule_never_hands_out_stale_and_accounts_every_group(seed: int, oversample):
    max_staleness = 2
    rng = random.Random(seed)
    stale_ids: list[str] = []
    q = SampleQueue(max_staleness=max_staleness, capacity=rng.choice([4, 64]), oversample=oversample, seed=seed,
                    on_stale=lambda g: stale_ids.append(g.group_id))
    version = 0
    put_ids: list[str] = []
    no_signal: list[str] = []
    handed: list[str] = []
    for step in range(600):
        action = rng.random()
        if action < 0.5:
            gid = f"s{seed}-{step}"
            rewards = tuple(rng.choice([0.0, 1.0]) for _ in range(rng.randint(1, 4)))
            versions = tuple(rng.randint(max(version - 4, 0), version) for _ in rewards)
            group = make_group(gid, 0, rewards=rewards, versions=versions,
                               domain=rng.choice(["bank", "clinic", "airline"]))
            put_ids.append(gid)
            if not q.put(group):
                no_signal.append(gid)
        elif action < 0.65:
            version += 1
        elif action < 0.7:
            q.drain_stale(version)
        else:
            out = q.get(version, rng.randint(1, 5), timeout=0)
            for g in out:  # staleness from the raw turn versions, independent of SampleGroup.min_version
                assert version - min(turn.version for t in g.trajectories for turn in t.turns) <= max_staleness
            handed += ids(out)
    queued = ids([SampleGroup.model_validate(g) for g in q.state_dict()["pending"]])
    outcomes = handed + no_signal + stale_ids + queued
    assert sorted(outcomes) == sorted(put_ids)  # each put group exactly once
    stats = q.stats()
    assert (stats.put, stats.handed_out, stats.dropped_no_signal, stats.dropped_stale, stats.depth) == (
        len(put_ids), len(handed), len(no_signal), len(stale_ids), len(queued))
    assert stats.accepted == stats.handed_out + stats.dropped_stale + stats.depth
    assert max(stats.staleness_histogram) <= max_staleness
    assert sum(stats.staleness_histogram.values()) == len(handed)
    assert sum(stats.per_domain_handed_out.values()) == len(handed)
    assert stale_ids and handed and no_signal  # the schedule exercised every path


def test_threaded_producers_and_trainer_account_every_group():
    stale_ids: list[str] = []
    lock = threading.Lock()

    def on_stale(g: SampleGroup) -> None:
        with lock:
            stale_ids.append(g.group_id)

    q = SampleQueue(max_staleness=1, capacity=16, on_stale=on_stale)
    version = [0]
    n_producers, per_producer = 4, 200

    def produce(p: int) -> None:
        rng = random.Random(p)
        for i in range(per_producer):
            v = version[0]
            q.put(make_group(f"p{p}-{i}", rng.randint(max(v - 3, 0), v), rewards=(0.0, rng.choice([0.0, 1.0]))))

    producers = [threading.Thread(target=produce, args=(p,), daemon=True) for p in range(n_producers)]
    for t in producers:
        t.start()
    handed: list[SampleGroup] = []
    while any(t.is_alive() for t in producers) or len(q):
        out = q.get(version[0], 4, timeout=0.01)
        assert all(version[0] - g.min_version <= 1 for g in out)
        handed += out
        version[0] += 1
    for t in producers:
        t.join(JOIN_S)
    stats = q.stats()
    assert stats.put == n_producers * per_producer
    assert stats.dropped_no_signal + len(handed) + len(stale_ids) + stats.depth == stats.put
    assert len(set(ids(handed)) | set(stale_ids)) == len(handed) + len(stale_ids)


def test_no_signal_groups_are_dropped():
    q = SampleQueue()
    assert not q.put(make_group("flat0", 0, rewards=(0.0, 0.0, 0.0)))
    assert not q.put(make_group("flat1", 0, rewards=(1.0,)))
    assert q.put(make_group("ok", 0, rewards=(0.0, 1.0)))
    assert len(q) == 1
    assert q.stats().dropped_no_signal == 2
    assert ids(q.get(0, 10, timeout=0)) == ["ok"]


def test_get_skips_stale_groups_and_reports_exactly_them():
    reported: list[str] = []
    q = SampleQueue(max_staleness=2, on_stale=lambda g: reported.append(g.group_id))
    for v in range(6):
        q.put(make_group(f"v{v}", v))
    # a group is as stale as its oldest token: one old turn makes it stale
    q.put(make_group("mixed", 5, versions=(5, 1)))
    out = q.get(trainer_version=5, n=10, timeout=0)
    assert ids(out) == ["v3", "v4", "v5"]
    assert sorted(reported) == ["mixed", "v0", "v1", "v2"]
    assert q.stats().dropped_stale == 4
    assert q.stats().staleness_histogram == {2: 1, 1: 1, 0: 1}


def test_drain_stale_purges_without_handing_out():
    reported: list[str] = []
    q = SampleQueue(max_staleness=0, on_stale=lambda g: reported.append(g.group_id))
    for v in range(3):
        q.put(make_group(f"v{v}", v))
    assert q.drain_stale(2) == 2
    assert reported == ["v0", "v1"]
    assert len(q) == 1
    assert q.stats().handed_out == 0


def test_only_stale_groups_means_get_returns_empty():
    q = SampleQueue(max_staleness=1)
    q.put(make_group("old", 0))
    assert q.get(trainer_version=5, n=1, timeout=0.01) == []
    assert len(q) == 0


def _domain_mix(oversample: dict[str, float] | None, seed: int, picks: int = 400) -> Counter:
    q = SampleQueue(capacity=4 * picks, oversample=oversample, seed=seed)
    for i in range(picks):  # both domains stay available for every pick
        q.put(make_group(f"b{i}", 0, domain="bank"))
        q.put(make_group(f"c{i}", 0, domain="clinic"))
    return Counter(g.domain for _ in range(picks) for g in q.get(0, 1, timeout=0))


@pytest.mark.parametrize("seed", range(3))
def test_oversampling_shifts_domain_mix(seed: int):
    plain = _domain_mix(None, seed)
    assert plain["bank"] == plain["clinic"] == 200  # FIFO alternates
    mix = _domain_mix({"bank": 3.0}, seed)
    assert mix["bank"] / sum(mix.values()) > 0.65  # expected 0.75


def test_oversampling_keeps_arrival_order_within_a_domain():
    q = SampleQueue(oversample={"bank": 2.0}, seed=1)
    for i in range(20):
        q.put(make_group(f"{'bc'[i % 2]}{i:02d}", 0, domain=["bank", "clinic"][i % 2]))
    out = q.get(0, 20, timeout=0)
    for domain in ("bank", "clinic"):
        seq = [g.group_id for g in out if g.domain == domain]
        assert seq == sorted(seq)


def test_blocking_get_returns_when_a_producer_puts():
    q = SampleQueue()
    result: list[SampleGroup] = []
    consumer = threading.Thread(target=lambda: result.extend(q.get(0, 4)), daemon=True)  # no timeout: put must wake it
    consumer.start()
    time.sleep(0.05)  # let the consumer block first (not asserted)
    q.put(make_group("late", 0))
    consumer.join(JOIN_S)
    woke = not consumer.is_alive()
    q.close()  # release the consumer if the put did not
    assert woke
    assert ids(result) == ["late"]


def test_get_times_out_empty():
    assert SampleQueue().get(0, 1, timeout=0.01) == []


def test_close_unblocks_getters():
    q = SampleQueue()
    results: list[list[SampleGroup]] = []
    consumers = [threading.Thread(target=lambda: results.append(q.get(0, 1)), daemon=True) for _ in range(3)]
    for t in consumers:
        t.start()
    time.sleep(0.05)  # let the consumers block first (not asserted)
    q.close()
    for t in consumers:
        t.join(JOIN_S)
    assert not any(t.is_alive() for t in consumers)
    assert results == [[], [], []]
    q.put(make_group("after", 0))
    assert q.get(0, 1, timeout=0) == []
    assert len(q) == 1  # still pending, so a checkpoint keeps it


def test_capacity_evicts_oldest_as_stale():
    reported: list[str] = []
    q = SampleQueue(capacity=3, on_stale=lambda g: reported.append(g.group_id))
    for i in range(5):
        assert q.put(make_group(f"g{i}", 0, domain=["bank", "clinic"][i % 2]))
    assert len(q) == 3
    assert reported == ["g0", "g1"]
    stats = q.stats()
    assert (stats.accepted, stats.dropped_stale) == (5, 2)
    assert ids(q.get(0, 10, timeout=0)) == ["g2", "g3", "g4"]


def test_state_dict_round_trip_reproduces_subsequent_gets():
    def fresh() -> SampleQueue:
        return SampleQueue(max_staleness=2, oversample={"bank": 2.0, "airline": 0.5}, seed=3)

    q = fresh()
    rng = random.Random(0)
    for i in range(60):
        q.put(make_group(f"g{i}", rng.randint(0, 4), rewards=(0.0, rng.random()),
                         domain=rng.choice(["bank", "clinic", "airline"])))
    q.get(3, 5, timeout=0)
    state = json.loads(json.dumps(q.state_dict()))
    resumed = fresh()
    resumed.load_state_dict(state)
    assert resumed.stats() == q.stats()
    assert len(resumed) == len(q) > 0

    def run(queue: SampleQueue) -> list[list[str]]:
        return [ids(queue.get(v, 3, timeout=0)) for v in (3, 4, 4, 5, 5, 6)]

    expected = run(q)
    assert any(expected)
    assert run(resumed) == expected
    assert resumed.stats() == q.stats()
