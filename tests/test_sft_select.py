"""Cold-start SFT data selection: K-Center-Greedy covers every region, the window score finds what the model has
not learned, and `toolgym sft` exposes both."""

from __future__ import annotations

import random

import pytest
import torch
from typer.testing import CliRunner

from toolgym.cli import app
from toolgym.policy.hf import load_causal_lm, load_tokenizer
from toolgym.policy.tiny import build_tiny_model
from toolgym.sft.data import SFTExample
from toolgym.sft.select import example_embeddings, k_center_greedy, select_examples, window_perplexity
from toolgym.sft.trainer import SFTConfig, tokenize_example, train_sft

SEEN = "the quick brown fox jumps over the lazy dog and then the fox sleeps under the old oak tree"
UNSEEN = "seven purple zebras quietly count 4821 marbles beside a frozen violet canal at midnight"


def _example(name: str, *turns: tuple[str, bool]) -> SFTExample:
    """A conversation whose assistant turns are `turns` (text, trained?), each answering a short user line."""
    messages = [{"role": "system", "content": "You help."}]
    for text, _ in turns:
        messages += [{"role": "user", "content": "Say it."}, {"role": "assistant", "content": text}]
    return SFTExample(task_id=name, domain="test", messages=messages, tools=[], train=[t for _, t in turns])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    corpus = [SEEN, UNSEEN, "You help. Say it."] * 4
    return build_tiny_model(corpus, tmp_path_factory.mktemp("select_tiny"), vocab_size=400, hidden_size=32,
                            num_layers=1, num_heads=2, max_position_embeddings=256)


def _clusters(seed: int) -> tuple[torch.Tensor, list[int]]:
    """3 tight clusters of 30 points plus 3 far outliers (random directions in 16-D), shuffled, and each row's
    group: 0-2 the clusters, 3-5 one outlier each."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 16, generator=gen)
    points = torch.cat([c + 0.01 * torch.randn(30, 16, generator=gen) for c in centres]
                       + [torch.randn(3, 16, generator=gen)])
    groups = [i // 30 for i in range(90)] + [3, 4, 5]
    order = torch.randperm(len(points), generator=gen).tolist()
    return points[order], [groups[i] for i in order]


@pytest.mark.parametrize("seed", range(5))
def test_k_center_picks_every_outlier_and_every_cluster(seed):
    points, groups = _clusters(seed)
    outliers = {i for i, g in enumerate(groups) if g >= 3}
    chosen = k_center_greedy(points, 6, seed=seed)
    assert len(set(chosen)) == 6
    assert outliers <= set(chosen)
    assert {groups[i] for i in chosen} == set(range(6))
    # a random subset of the same size is no match: it misses an outlier
    assert not outliers <= set(random.Random(seed).sample(range(len(points)), 6))


def test_k_center_is_deterministic_for_a_seed_and_checks_k():
    points, _ = _clusters(0)
    assert k_center_greedy(points, 10, seed=3) == k_center_greedy(points, 10, seed=3)
    assert len({k_center_greedy(points, 1, seed=s)[0] for s in range(10)}) > 1
    assert k_center_greedy(points, len(points), seed=0) != list(range(len(points)))
    assert sorted(k_center_greedy(points, len(points), seed=0)) == list(range(len(points)))
    for bad in (0, -1, len(points) + 1):
        with pytest.raises(ValueError, match="k must be between 1"):
            k_center_greedy(points, bad)


@pytest.mark.parametrize("flip", [False, True])
def test_scores_break_ties_between_equally_distant_points(flip):
    # the start (highest score) is at e0; e1 and e2 are equally far from it; the harder of them must come next
    points = torch.eye(3)
    scores = torch.tensor([3.0, 1.0, 2.0] if not flip else [3.0, 2.0, 1.0])
    harder = 2 if not flip else 1
    assert k_center_greedy(points, 2, scores, score_weight=1.0)[:2] == [0, harder]
    # without the weight the score only picks the start; a point nearly as far but much harder still wins with it
    near = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.05, 1.0, 1.0]])
    hard = torch.tensor([3.0, 0.5, 2.0])
    assert k_center_greedy(near, 2, hard, score_weight=0.0) == [0, 1]
    assert k_center_greedy(near, 2, hard, score_weight=1.0) == [0, 2]


def test_window_score_is_low_on_what_the_model_was_trained_on(tiny, tmp_path):
    seen, unseen = _example("seen", (SEEN, True)), _example("unseen", (UNSEEN, True))
    # same trained tokens as `seen`, then an untrained turn full of unseen text: the mask must leave it out
    masked = _example("masked", (SEEN, True), (UNSEEN, False))
    train_sft(tiny, [seen] * 4, tmp_path / "sft", SFTConfig(max_steps=25, batch_size=4, lr=1e-2, warmup_steps=1),
              show_progress=False)
    model, tokenizer = load_causal_lm(tmp_path / "sft"), load_tokenizer(tmp_path / "sft")
    scores = window_perplexity(model, tokenizer, [seen, unseen, masked], window=8)
    assert scores[0] < 0.5 * scores[1]
    assert torch.allclose(scores[2], scores[0], atol=1e-4)
    # a window longer than the example is the mean over its trained tokens (the SFT loss); one token is the worst
    ids, mask = tokenize_example(tokenizer, unseen)
    ids = torch.tensor([ids])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=torch.where(torch.tensor([mask]) == 1, ids, -100)).loss
    whole = window_perplexity(model, tokenizer, [unseen], window=10_000)[0]
    assert torch.allclose(whole, loss, atol=1e-4)
    assert window_perplexity(model, tokenizer, [unseen], window=1)[0] > whole + 0.1


def test_embeddings_are_per_example_means(tiny):
    model, tokenizer = load_causal_lm(tiny), load_tokenizer(tiny)
    a, b = _example("a", (SEEN, True)), _example("b", (UNSEEN, True))
    emb = example_embeddings(model, tokenizer, [a, b, a], batch_size=3)
    assert emb.shape == (3, model.config.hidden_size)
    assert torch.allclose(emb[0], emb[2], atol=1e-5)
    assert (emb[0] - emb[1]).abs().max() > 1e-3
    # padding in a batch with a longer example changes nothing: each row is that example's own mean
    for row, ex in ((0, a), (1, b)):
        assert torch.allclose(emb[row], example_embeddings(model, tokenizer, [ex])[0], atol=1e-5)


def test_select_examples_sizes_and_methods(tiny):
    examples = [_example(f"t{i}", (f"{SEEN} {i}" if i % 2 else f"{UNSEEN} {i}", True)) for i in range(5)]
    kept = select_examples(tiny, examples, 0.4, "kcenter", seed=0)
    assert len(kept) == 2 and kept == sorted(set(kept))
    assert {i % 2 for i in kept} == {0, 1}  # the two kinds of content are both covered
    assert select_examples(tiny, examples, 0.4, "random", seed=1) == sorted(random.Random(1).sample(range(5), 2))
    assert select_examples(tiny, examples, 0.01, "random", seed=1) != []
    assert select_examples(tiny, examples, 1.0, "all", seed=0) == list(range(5))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            select_examples(tiny, examples, bad, "kcenter", seed=0)


def test_cli_sft_offers_selection_and_rejects_a_bad_fraction(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["sft", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--select ", "--select-fraction", "--steps"):
        assert option in result.output
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("")
    for bad in ("0", "1.5"):
        result = runner.invoke(app, ["sft", "--model", str(tmp_path), "--tasks", str(tasks), "--out",
                                     str(tmp_path / "out"), "--select", "kcenter", "--select-fraction", bad],
                               env={"COLUMNS": "200"})
        assert result.exit_code != 0
        assert "--select-fraction" in result.output and "(0, 1]" in result.output
    assert not (tmp_path / "out").exists()
