"""The tabletop recipe plugged into SFT: its rows in a batch, their targets and roles, its checks, and
`rlrc-sim train` end to end."""
import json

import numpy as np
import pytest
import torch

from export.demos import DemoReader
from export.model import OpenVLA, init_weights
from export.tiny import PRESETS, preset_config
from export.train.data import load_demos
from export.train.sft import demo_collator
from rlrc_runtime.errors import ConfigError, DatasetError
from sim.data import DemoConfig, write_demos
from sim.recipes.counterfactual import demo_counterfactuals
from sim.recipes.grounding import untouched_frames
from sim.recipes.tabletop import TabletopRecipe, TabletopRecipeConfig
from sim.tasks import COLOURS, SIDES


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe") / "demos.hdf5"
    write_demos(DemoConfig(episodes=6, families=("pick", "push", "stack"), image_size=64, seed=11), out,
                progress=False)
    return out



def _recipe(demos, transforms, **kw):
    """(recipe, data, model) with the recipe's extras collected and prepared on a tiny-128 model."""
    recipe = TabletopRecipe(TabletopRecipeConfig(**kw))
    data = load_demos([str(demos)], transforms, None, on_demo=recipe.read_demo)
    model = OpenVLA(preset_config(PRESETS["tiny-128"], norm_stats=data.norm_stats))
    init_weights(model, seed=0)
    recipe.prepare(model, data, transforms)
    return recipe, data, model


def test_grounding_questions_per_untouched_frame(demos, transforms):
    plain, _, _ = _recipe(demos, transforms, ground_frac=0.25)
    task, data, _ = _recipe(demos, transforms, ground_frac=0.25, ground_task=True)
    with DemoReader(demos) as reader:
        frames = sum(untouched_frames(reader.episode_info(d.key)[3]) for d in reader.iter_demos())
    assert len(task.q_image) == len(plain.q_image) + frames  # one task question per untouched frame
    assert len(task.query_prompts) == len(plain.query_prompts) + len(set(data.instructions))
    assert task.query_tokens.shape[1] == 4 and 31744 <= task.query_tokens.min() <= task.query_tokens.max() <= 31999
    # Orientation questions are about bars only, weighted against the "where" ones.
    turned, _, _ = _recipe(demos, transforms, ground_frac=0.25, ground_orient=True, ground_orient_weight=3.0)
    how = transforms.prompt.encode_fn("In: How is the")
    turn_prompts = [p for p in turned.query_prompts if p[1 : 1 + len(how)].tolist() == how]
    assert all(transforms.prompt.encode_fn(" bar")[-1] in p.tolist() for p in turn_prompts)
    assert len(turned.q_image) == len(plain.q_image) + sum(turned.q_turn)
    np.testing.assert_array_equal(turned.query_weights.numpy(), np.where(turned.q_turn, 3.0, 1.0))
    assert plain.query_weights is None


def test_batch_rows_demos_then_questions_then_pairs(demos, transforms):
    recipe, data, model = _recipe(demos, transforms, ground_frac=0.25, counterfactual_frac=0.25, attn_role=1.0)
    collate = demo_collator(data, transforms, model)
    assert recipe.rows(16) == 4 + 2 * 2
    demo_rows = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    gen = torch.Generator().manual_seed(0)
    samples, extras = recipe.samples(demo_rows, gen)
    batch = collate([data.sample(int(i)) for i in demo_rows] + samples, None, extras)
    assert batch.pixel_values.shape[0] == 16
    # Question rows: 4 answer tokens + EOS; the frame is the demo frame it asks about.
    per_row = torch.bincount(batch.label_rows, minlength=16)
    assert per_row[:8].tolist() == [8] * 8 and per_row[8:12].tolist() == [5] * 4 and per_row[12:].tolist() == [8] * 4
    text = transforms.prompt.encode_fn("In: Where is the")
    assert batch.input_ids[8, 1 : 1 + len(text)].tolist() == text
    q_rows = [s[0] for s in samples[:4]]
    for b, row in zip(range(8, 12), q_rows):
        assert np.array_equal(batch.pixel_values[b].numpy(), transforms.image(data.images[row])[0])
    # Pairs: the frame with its own instruction and action, then with the swapped one and the expert's action.
    for b in (12, 14):
        assert torch.equal(batch.pixel_values[b], batch.pixel_values[b + 1])
        assert not torch.equal(batch.input_ids[b], batch.input_ids[b + 1])
    # Roles: demo rows' from their episode, questions none, pair rows those their own instruction names.
    roles = batch.extras["roles"]
    assert roles[:8].tolist() == recipe.step_roles_all[demo_rows].tolist()
    assert (roles[8:12] == -1).all()
    palette = list(COLOURS)
    text_of = {tuple(p.tolist()): t for p, t in [*zip(data.prompts, data.instructions),
                                                  *zip(recipe.cf_prompts, recipe.cf_instruction)]}
    for b, (_, prompt, _) in zip(range(12, 16), samples[4:]):
        words = text_of[tuple(prompt.tolist())].split()
        named = [palette.index(w) for w in words if w in palette]
        assert roles[b, 0].item() == named[0]
        assert roles[b, 1].item() == (named[1] if len(named) == 2 else -1)


def test_counterfactual_pairs_cover_both_families_equally(demos, transforms):
    recipe, data, _ = _recipe(demos, transforms, counterfactual_frac=0.25)
    with DemoReader(demos) as reader:
        expected = sum(len(demo_counterfactuals(*reader.episode_info(d.key)[:3], d.instruction, d.proprio))
                       for d in reader.iter_demos())
    assert len(recipe.cf_image) == len(recipe.cf_tokens) == expected > 0
    is_stack = np.asarray([not set(SIDES) & set(i.split()) for i in recipe.cf_instruction])  # no side word
    w = recipe.cf_weights.numpy()
    assert is_stack.any() and not is_stack.all() and w[is_stack].sum() == pytest.approx(w[~is_stack].sum())
    # The swapped task moves the other block: the lateral action differs from the recorded one somewhere.
    rows = np.asarray(recipe.cf_image)[is_stack]
    assert (recipe.cf_tokens[is_stack, :2] != data.tokens[rows, :2]).any()


def test_config_and_data_checks(demos, transforms, libero_file):
    with pytest.raises(ConfigError, match="--ground-frac"):
        TabletopRecipeConfig(ground_task=True)
    with pytest.raises(ConfigError, match="pass --ground-orient too"):
        TabletopRecipeConfig(ground_frac=0.2, ground_orient_weight=4.0)
    with pytest.raises(ConfigError, match="--counterfactual-frac"):
        TabletopRecipeConfig(ground_frac=0.5, counterfactual_frac=0.5)
    with pytest.raises(ConfigError, match="gives no pair in a batch of 32.*0.0625"):
        TabletopRecipe(TabletopRecipeConfig(counterfactual_frac=0.02)).rows(32)
    for kw, flag in [({"ground_frac": 0.2}, "--ground-frac"), ({"counterfactual_frac": 0.25}, "--counterfactual-frac"),
                     ({"attn_role": 1.0}, "--attn-role")]:
        recipe = TabletopRecipe(TabletopRecipeConfig(**kw))
        data = load_demos([str(libero_file)], transforms, "libero_x", on_demo=recipe.read_demo)
        model = OpenVLA(preset_config(PRESETS["tiny-128"], norm_stats=data.norm_stats))
        with pytest.raises(DatasetError, match=flag):
            recipe.prepare(model, data, transforms)


def test_rlrc_sim_train_runs_the_recipe(demos, tmp_path):
    from export.checkpoint import load_model
    from sim.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", str(demos), "--out", str(out), "--preset", "tiny-128", "--steps", "3",
                 "--batch-size", "16", "--warmup-steps", "1", "--save-every", "3", "--log-every", "1", "--no-progress",
                 "--ground-frac", "0.25", "--ground-task", "--counterfactual-frac", "0.125", "--attn-role", "0.5",
                 "--attn-role-tokens", "2"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(np.isfinite(r["losses/attn_role"]) and r["losses/attn_role"] > 0 for r in rows)
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["recipe"]["counterfactual_frac"] == 0.125 and saved["train"]["steps"] == 3
    # Training only: the checkpoint is a plain OpenVLA checkpoint.
    model, info = load_model(out / "final")
    assert set(model.state_dict()) == set(OpenVLA(info.config).state_dict())
    # Bad recipe values exit 2 with the flag named.
    assert main(["train", "--data", str(demos), "--out", str(tmp_path / "x"), "--ground-task"]) == 2
