"""`toolgym pretrain`: the recipe writes an ordinary checkpoint plus its figures, never trains on the demo's
domains, and the shipped base checkpoint is that recipe's output."""

from __future__ import annotations

import json

import pytest

from toolgym.assets import TINY_BASE
from toolgym.demo_config import DemoConfig
from toolgym.policy.hf import HFPolicy
from toolgym.policy.pretrain import RECIPES, PretrainRecipe, pretrain, recipe_tasks


def test_the_recipe_never_trains_on_the_demo_domains():
    recipe = RECIPES["tiny"]
    assert not set(recipe.domains) & set(DemoConfig().train_domains)
    tasks = recipe_tasks(recipe.model_copy(update={"envs_per_domain": 1}))
    assert tasks and {t.domain for t in tasks} <= set(recipe.domains)
    assert {len(t.gold_chain) for t in tasks} == {1, 2}


def test_a_small_recipe_writes_a_loadable_checkpoint_with_its_figures(tmp_path, one_thread):
    recipe = PretrainRecipe(domains=("clinic",), envs_per_domain=2, steps=3, vocab_size=600, hidden_size=32,
                            layers=1, heads=2, batch_size=2, copy_steps=4, copy_batch=4, copy_rows=2)
    figures = pretrain(recipe, tmp_path / "base", show_progress=False)
    assert figures["steps"] == 3 and figures["tasks"] > 0
    copy_stage = (tmp_path / "base" / "copy_metrics.jsonl").read_text().splitlines()
    assert len(copy_stage) == 4 and 0.0 <= figures["copy_accuracy_final"] <= 1.0
    assert 0.0 <= figures["copy_accuracy_before_episodes"] <= 1.0
    saved = json.loads((tmp_path / "base" / "pretrain.json").read_text())
    assert PretrainRecipe.model_validate_json(saved["recipe"]) == recipe
    assert not (tmp_path / "base" / "init").exists()
    policy = HFPolicy(tmp_path / "base")
    assert policy.model.config.hidden_size == 32


@pytest.mark.skipif(not (TINY_BASE / "pretrain.json").exists(), reason="no shipped base checkpoint")
def test_the_shipped_base_is_the_tiny_recipe_output():
    saved = json.loads((TINY_BASE / "pretrain.json").read_text())
    recipe = PretrainRecipe.model_validate_json(saved["recipe"])
    assert recipe == RECIPES["tiny"].model_copy(update={"seed": recipe.seed})
    assert saved["steps"] == recipe.steps and saved["final_loss"] < saved["first_loss"]
    policy = HFPolicy(TINY_BASE)
    assert policy.model.config.hidden_size == recipe.hidden_size
    assert policy.model.config.num_hidden_layers == recipe.layers
