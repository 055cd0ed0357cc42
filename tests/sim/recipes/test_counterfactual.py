"""Counterfactual instructions: swapped tasks stay in the id split, and their labels are what the real
expert does in the simulator when given the swapped task on the recorded frame."""
import dataclasses

import numpy as np
import pytest
import torch

from export.tiny import PRESETS, preset_config
from export.tokenizer_gen import write_tokenizer
from export.train import TrainConfig, load_dataset, make_batch
from rlrc_runtime.action import ActionTokenizer
from rlrc_runtime.errors import ConfigError
from rlrc_runtime.preprocess import ImageTransform
from rlrc_runtime.prompt import PromptTokenizer
from sim.counterfactual import demo_counterfactuals, swapped_tasks
from sim.data import DemoConfig, DemoReader, write_demos
from sim.grounding import redraw_task, untouched_frames
from sim.tasks import SIDES, get_family


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("cf") / "demos.hdf5"
    write_demos(DemoConfig(episodes=6, families=("pick", "push", "stack"), image_size=64, seed=11), out,
                progress=False)
    return out


@pytest.mark.parametrize("family", ["stack", "push"])
def test_swapped_tasks_name_another_object_or_side_and_stay_in_the_id_split(family):
    fam = get_family(family)
    allowed = set(fam.id_combos())
    n_swaps = 0
    for seed in range(60):
        task = redraw_task(family, "id", seed)
        for swapped in swapped_tasks(task):
            n_swaps += 1
            assert swapped.combo in allowed and swapped.instruction != task.instruction
            assert swapped.template_index == task.template_index and swapped.placements == task.placements
            colour = {p.slot: p.colour for p in task.placements}
            if family == "stack":
                assert (swapped.target, swapped.goal) == (task.goal, task.target)
                words = swapped.instruction.split()
                assert words.index(colour[task.goal]) < words.index(colour[task.target])
            else:
                assert swapped.target == task.target and swapped.side != task.side
                assert swapped.side in swapped.instruction.split()
    # stack: one swap unless it is a held-out pair; push: up to three other sides
    assert n_swaps > (20 if family == "stack" else 100)
    assert swapped_tasks(redraw_task("pick", "id", 0)) == []


def test_counterfactual_labels_are_the_experts_action_for_the_swapped_task(demos):
    from sim import make_env
    from sim.experts import make_expert

    checked = {"stack": 0, "push": 0}
    with DemoReader(demos) as reader:
        for demo in reader.iter_demos():
            family, split, seed, ee_pos = reader.episode_info(demo.key)
            cfs = demo_counterfactuals(family, split, seed, demo.instruction, demo.proprio)
            if family == "pick":
                assert cfs == []
                continue
            n = untouched_frames(ee_pos)
            swaps = swapped_tasks(redraw_task(family, split, seed))
            assert len(cfs) == n * len(swaps)
            # Replay the recorded (noise-free) actions; on every untouched frame hand the real expert the
            # swapped task over the live simulator and compare with the label computed from proprio alone.
            env = make_env(family=family, split=split, image_size=64)
            try:
                env.reset(seed=seed)
                world = env.unwrapped
                factual = world.task
                for t in range(n):
                    for swapped in swaps:
                        world.task = swapped
                        expert = make_expert(env)
                        expert.reset()
                        live = expert.act()
                        world.task = factual
                        label = next(c for c in cfs if c.frame == t and c.instruction == swapped.instruction)
                        np.testing.assert_allclose(label.action, live, atol=2e-3)
                        checked[family] += 1
                    env.step(demo.actions[t])
            finally:
                env.close()
    assert checked["push"] > 0 and checked["stack"] > 0, checked


def test_counterfactual_pairs_in_a_batch(demos, tmp_path):
    write_tokenizer(tmp_path)
    tok = PromptTokenizer.from_dir(tmp_path)
    config = preset_config(PRESETS["tiny-128"], norm_stats={})
    transform = ImageTransform.from_config(config)
    ds = load_dataset([str(demos)], transform, tok, ActionTokenizer(), None, counterfactuals=True)
    with DemoReader(demos) as reader:
        expected = sum(len(demo_counterfactuals(*reader.episode_info(d.key)[:3], d.instruction, d.proprio))
                       for d in reader.iter_demos())
    assert len(ds.cf_image) == len(ds.cf_prompt) == len(ds.cf_tokens) == expected > 0
    # Equal share per family: the weights of stack and push samples sum to the same total.
    is_stack = np.asarray([not set(SIDES) & set(ds.instructions[i].split()) for i in ds.cf_prompt])  # no side word
    assert ds.cf_weight[is_stack].sum() == pytest.approx(ds.cf_weight[~is_stack].sum())
    c = int(np.flatnonzero(is_stack)[0])
    batch = make_batch(ds, np.array([0]), transform, config.num_patches, 32000, 2, cf_idx=np.array([c]))
    assert batch.pixel_values.shape[0] == 3  # one demo step, then the pair
    assert torch.equal(batch.pixel_values[1], batch.pixel_values[2])  # same frame (no shift augmentation here)
    row = int(ds.cf_image[c])
    assert batch.input_ids[1, : len(ds.prompts[ds.instruction_index[row]])].tolist() == \
        ds.prompts[ds.instruction_index[row]].tolist()
    assert batch.input_ids[2, : len(ds.prompts[ds.cf_prompt[c]])].tolist() == ds.prompts[ds.cf_prompt[c]].tolist()
    assert batch.labels[batch.label_rows == 1][:7].tolist() == ds.tokens[row].tolist()
    assert batch.labels[batch.label_rows == 2][:7].tolist() == ds.cf_tokens[c].tolist()
    # The swapped task moves the other block: the lateral action differs from the recorded one somewhere.
    stack_rows = np.flatnonzero(is_stack)
    assert (ds.cf_tokens[stack_rows, :2] != ds.tokens[ds.cf_image[stack_rows], :2]).any()


def test_pair_rows_carry_the_roles_of_their_own_instruction(demos, tmp_path):
    """--attn-role on counterfactual pairs: each row's roles are the colours its own instruction names."""
    from sim.tasks import COLOURS

    write_tokenizer(tmp_path)
    tok = PromptTokenizer.from_dir(tmp_path)
    config = preset_config(PRESETS["tiny-128"], norm_stats={})
    transform = ImageTransform.from_config(config)
    ds = load_dataset([str(demos)], transform, tok, ActionTokenizer(), None, counterfactuals=True, roles=True)
    assert ds.cf_roles.shape == (len(ds.cf_image), 2)
    cf = np.arange(len(ds.cf_image))
    batch = make_batch(ds, np.array([0, 1]), transform, config.num_patches, 32000, 2, cf_idx=cf)
    palette = list(COLOURS)
    assert batch.roles[:2].tolist() == ds.step_roles[[0, 1]].tolist()
    n_stack = 0
    for k, c in enumerate(cf):
        for row, prompt in ((2 + 2 * k, ds.instruction_index[ds.cf_image[c]]), (3 + 2 * k, ds.cf_prompt[c])):
            words = ds.instructions[prompt].split()
            named = [palette.index(w) for w in words if w in palette]
            target, goal = batch.roles[row].tolist()
            assert target == named[0]  # stack and push both name the block to move first
            if len(named) == 2:  # stack: the block it goes on is the second colour
                assert goal == named[1]
                n_stack += 1
            else:
                assert goal == -1
    assert n_stack > 0 and n_stack < 2 * len(cf)  # both families are in the fixture


def test_counterfactual_option_checks(tmp_path):
    with pytest.raises(ConfigError, match="--counterfactual-frac"):
        TrainConfig(data="x.hdf5", out=str(tmp_path), ground_frac=0.5, counterfactual_frac=0.5)
    with pytest.raises(ConfigError, match="--counterfactual-frac"):
        TrainConfig(data="x.hdf5", out=str(tmp_path), counterfactual_frac=-0.1)
    with pytest.raises(ConfigError, match="gives no pair in a batch of 32.*0.0625"):
        TrainConfig(data="x.hdf5", out=str(tmp_path), counterfactual_frac=0.02)
    assert TrainConfig(data="x.hdf5", out=str(tmp_path), counterfactual_frac=0.0625).counterfactual_frac == 0.0625
    ok = TrainConfig(data="x.hdf5", out=str(tmp_path), ground_frac=0.2, counterfactual_frac=0.25)
    assert dataclasses.asdict(ok)["counterfactual_frac"] == 0.25


def test_counterfactuals_need_our_stack_or_push_demos(tmp_path, libero_file):
    write_tokenizer(tmp_path / "tok")
    tok = PromptTokenizer.from_dir(tmp_path / "tok")
    transform = ImageTransform.from_config(preset_config(PRESETS["tiny-128"], norm_stats={}))
    with pytest.raises(ConfigError, match="counterfactual-frac"):
        load_dataset([str(libero_file)], transform, tok, ActionTokenizer(), "libero_x", counterfactuals=True)
