"""Grounding queries: answers re-drawn from the episode seed match the simulator, and batch correctly."""
import numpy as np
import pytest
import torch

from export.tiny import PRESETS, preset_config
from export.tokenizer_gen import write_tokenizer
from export.train import load_dataset, make_batch
from rlrc_runtime.action import ActionTokenizer
from rlrc_runtime.errors import ConfigError
from rlrc_runtime.preprocess import ImageTransform
from rlrc_runtime.prompt import PromptTokenizer
from sim.data import DemoConfig, DemoReader, write_demos
from sim.grounding import (ANSWER_RANGES, SYMMETRY, TASK_NAME, demo_queries, denormalise_answer, episode_objects,
                           episode_target, normalise_answer, orientation_answer, redraw_task, untouched_frames)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("ground") / "demos.hdf5"
    write_demos(DemoConfig(episodes=4, families=("pick", "stack"), image_size=64, seed=3), out, progress=False)
    return out


@pytest.mark.parametrize("split,n_objects", [("id", 2), ("id_clutter", 4)])
def test_objects_redrawn_from_the_seed_are_where_the_simulator_put_them(split, n_objects):
    from sim import make_env

    env = make_env(family="place", split=split, image_size=64)
    try:
        for seed in (11, 12):
            env.reset(seed=seed)
            instruction, objects = episode_objects("place", split, seed)
            assert instruction == env.unwrapped.task.instruction
            assert len(objects) == n_objects  # block and plate; id_clutter adds a second plate and block
            for p in env.unwrapped.task.placements:
                name = f"{p.colour} {p.kind}"
                if name in objects:
                    np.testing.assert_allclose(objects[name], env.unwrapped.body_pos(p.slot)[:2], atol=1e-6)
    finally:
        env.close()


def test_queries_only_before_the_hand_comes_down(demos):
    with DemoReader(demos) as reader:
        for demo in reader.iter_demos():
            family, split, seed, ee_pos = reader.episode_info(demo.key)
            qs = demo_queries(family, split, seed, demo.instruction, ee_pos)
            n = untouched_frames(ee_pos)
            assert 0 < n < len(demo) and ee_pos[n, 2] < 0.07 <= ee_pos[:n, 2].min()
            assert {q.frame for q in qs} == set(range(n))
            assert all(np.all(np.abs(q.answer) <= 1) for q in qs)
            # A recording from other task code (instruction differs) yields no answers at all.
            assert demo_queries(family, split, seed, demo.instruction + " now", ee_pos) == []


def test_task_queries_answer_the_object_the_instruction_moves(demos):
    from sim import make_env

    with DemoReader(demos) as reader:
        for demo in reader.iter_demos():
            family, split, seed, ee_pos = reader.episode_info(demo.key)
            plain = demo_queries(family, split, seed, demo.instruction, ee_pos)
            both = demo_queries(family, split, seed, demo.instruction, ee_pos, task_queries=True)
            task = [q for q in both if q.name == TASK_NAME.format(instruction=demo.instruction)]
            assert len(task) == untouched_frames(ee_pos) and len(both) == len(plain) + len(task)
            env = make_env(family=family, split=split, image_size=64)
            try:
                env.reset(seed=seed)
                world = env.unwrapped
                target = world.body_pos(world.task.target)[:2]
                np.testing.assert_allclose(episode_target(family, split, seed), target, atol=1e-4)  # settled on reset
                if family == "stack":  # the answer is the first-named block's, not the other one's
                    colour = {p.slot: p.colour for p in world.task.placements}
                    words = demo.instruction.split()
                    assert words.index(colour[world.task.target]) < words.index(colour[world.task.goal])
                    goal = world.body_pos(world.task.goal)[:2]
                    assert np.linalg.norm(target - goal) > 0.02
                hand = ee_pos[0][:2]
                np.testing.assert_allclose(task[0].answer, normalise_answer(np.concatenate([target, target - hand])),
                                           atol=1e-3)
            finally:
                env.close()


def test_task_queries_need_a_grounding_share(demos, tmp_path):
    from export.train import TrainConfig

    write_tokenizer(tmp_path)
    tok = PromptTokenizer.from_dir(tmp_path)
    transform = ImageTransform.from_config(preset_config(PRESETS["tiny-128"], norm_stats={}))
    plain = load_dataset([str(demos)], transform, tok, ActionTokenizer(), None, grounding=True)
    both = load_dataset([str(demos)], transform, tok, ActionTokenizer(), None, grounding=True, task_queries=True)
    with DemoReader(demos) as reader:
        frames = sum(untouched_frames(reader.episode_info(d.key)[3]) for d in reader.iter_demos())
    assert len(both.query_image) == len(plain.query_image) + frames
    assert len(both.query_prompts) == len(plain.query_prompts) + len(set(both.instructions))
    with pytest.raises(ConfigError, match="--ground-frac"):
        TrainConfig(data="x.hdf5", out=str(tmp_path), ground_task=True)


def test_orientation_answer_is_the_turn_the_expert_makes():
    """On real resets: the answer's turn is the rotation from the hand to the expert's grasp yaw, and its
    sin/cos are the same for every yaw the object looks the same at."""
    import math

    from sim import make_env
    from sim.experts import make_expert

    env = make_env(family="pick", split="id", image_size=64)
    seen = set()
    try:
        for seed in range(100000, 100020):
            env.reset(seed=seed)
            world = env.unwrapped
            kind = world.task.placement(world.task.target).kind
            if kind not in SYMMETRY:
                continue
            seen.add(kind)
            yaw, hand = world.body_yaw(world.task.target), float(world.ee_euler[2])
            answer = orientation_answer(kind, yaw, hand)
            period = SYMMETRY[kind]
            grasp = make_expert(world)._grasp_yaw(world.task.target)
            assert answer[2] * period / 2 == pytest.approx(grasp - hand, abs=1e-6)
            assert answer[3] == pytest.approx(hand / math.pi, abs=1e-6)
            assert np.all(np.abs(answer) <= 1)
            np.testing.assert_allclose(orientation_answer(kind, yaw + period, hand)[:3], answer[:3], atol=1e-9)
            # The hand turned by the answer's turn is at a grasp yaw: the turn from there is zero.
            assert orientation_answer(kind, yaw, hand + answer[2] * period / 2)[2] == pytest.approx(0, abs=1e-9)
    finally:
        env.close()
    assert seen == {"block", "bar"}


def test_orientation_queries_for_blocks_and_bars_only(demos, tmp_path):
    from export.train import TrainConfig

    with DemoReader(demos) as reader:
        for demo in reader.iter_demos():
            family, split, seed, ee_pos = reader.episode_info(demo.key)
            plain = demo_queries(family, split, seed, demo.instruction, ee_pos)
            both = demo_queries(family, split, seed, demo.instruction, ee_pos, hand_yaw=demo.proprio[:, 5])
            turned = [q for q in both if q.question == "turn"]
            assert len(both) == len(plain) + len(turned) and all(q.question == "where" for q in plain)
            kinds = {f"{p.colour} {p.kind}": p for p in redraw_task(family, split, seed).placements}
            asked = sorted({q.name for q in turned})
            assert asked == sorted(n for n, p in kinds.items() if p.kind in SYMMETRY)
            assert len(turned) == len(asked) * untouched_frames(ee_pos)
            bars = demo_queries(family, split, seed, demo.instruction, ee_pos, hand_yaw=demo.proprio[:, 5],
                                orient_kinds=("bar",))
            assert [q for q in bars if q.question == "turn"] == [q for q in turned if kinds[q.name].kind == "bar"]
            for q in turned:
                p = kinds[q.name]
                np.testing.assert_allclose(q.answer, orientation_answer(p.kind, p.yaw, demo.proprio[q.frame, 5]), atol=1e-6)
                assert q.template.startswith("In: How is the {instruction} turned?")
    write_tokenizer(tmp_path)
    tok = PromptTokenizer.from_dir(tmp_path)
    transform = ImageTransform.from_config(preset_config(PRESETS["tiny-128"], norm_stats={}))
    plain_ds = load_dataset([str(demos)], transform, tok, ActionTokenizer(), None, grounding=True)
    ds = load_dataset([str(demos)], transform, tok, ActionTokenizer(), None, grounding=True, orientation=True)
    assert len(ds.query_image) > len(plain_ds.query_image)
    how = tok.encode_fn("In: How is the")
    turn_prompts = [i for i, pr in enumerate(ds.query_prompts) if pr[1 : 1 + len(how)].tolist() == how]
    assert turn_prompts and len(ds.query_prompts) == len(plain_ds.query_prompts) + len(turn_prompts)
    with pytest.raises(ConfigError, match="--ground-frac"):
        TrainConfig(data="x.hdf5", out=str(tmp_path), ground_orient=True)
    with pytest.raises(ConfigError, match="pass --ground-orient too"):
        TrainConfig(data="x.hdf5", out=str(tmp_path), ground_frac=0.2, ground_orient_weight=4.0)
    with pytest.raises(ConfigError, match="subset of block, bar"):
        TrainConfig(data="x.hdf5", out=str(tmp_path), ground_frac=0.2, ground_orient=True, ground_orient_kinds="cylinder")
    bar_ds = load_dataset([str(demos)], transform, tok, ActionTokenizer(), None, grounding=True, orientation=True,
                          orient_kinds=("bar",))
    assert len(plain_ds.query_image) <= len(bar_ds.query_image) < len(ds.query_image)


def test_orientation_queries_of_chosen_kinds():
    """--ground-orient-kinds bar: a clutter scene with a bar and blocks is asked how the bar is turned, not the blocks."""
    seed = next(s for s in range(500) if {p.kind for p in redraw_task("pick", "id_clutter", s).placements} >= {"bar", "block"})
    instruction, objects = episode_objects("pick", "id_clutter", seed)
    ee_pos = np.tile([0.0, 0.0, 0.2], (3, 1))
    kinds = {f"{p.colour} {p.kind}": p.kind for p in redraw_task("pick", "id_clutter", seed).placements}
    for asked in [("bar",), ("block",), ("block", "bar")]:
        queries = demo_queries("pick", "id_clutter", seed, instruction, ee_pos, hand_yaw=np.zeros(3), orient_kinds=asked)
        turned = {q.name for q in queries if q.question == "turn"}
        assert turned == {n for n in objects if kinds[n] in asked}
        assert len([q for q in queries if q.question == "where"]) == 3 * len(objects)


def test_answer_normalisation_spans_the_bins():
    lo = np.array([r[0] for r in ANSWER_RANGES])
    hi = np.array([r[1] for r in ANSWER_RANGES])
    np.testing.assert_allclose(normalise_answer(lo), -1)
    np.testing.assert_allclose(normalise_answer(hi), 1)
    np.testing.assert_allclose(normalise_answer((lo + hi) / 2), 0, atol=1e-12)
    values = np.array([0.1, -0.2, 0.3, -0.4])
    np.testing.assert_allclose(denormalise_answer(normalise_answer(values)), values, atol=1e-12)
    np.testing.assert_allclose(denormalise_answer(normalise_answer(values)[:2]), values[:2], atol=1e-12)


def test_query_sequences_in_a_batch(demos, tmp_path):
    write_tokenizer(tmp_path)
    tok = PromptTokenizer.from_dir(tmp_path)
    config = preset_config(PRESETS["tiny-128"], norm_stats={})
    transform = ImageTransform.from_config(config)
    ds = load_dataset([str(demos)], transform, tok, ActionTokenizer(), None, grounding=True)
    assert len(ds.query_image) > 0 and ds.query_tokens.shape[1] == 4
    assert ds.query_tokens.min() >= 31744 and ds.query_tokens.max() <= 31999
    batch = make_batch(ds, np.array([0, 1]), transform, config.num_patches, 32000, 2, query_idx=np.array([0, 5]))
    assert batch.pixel_values.shape[0] == 4
    assert batch.labels.shape == (2 * 8 + 2 * 5,)  # 7 action tokens + EOS, 4 answer tokens + EOS
    text_pos = batch.label_pos - config.num_patches + 1
    assert torch.equal(batch.input_ids[batch.label_rows, text_pos], batch.labels)
    row = batch.labels[batch.label_rows == 3]
    assert row[:4].tolist() == ds.query_tokens[5].tolist() and row[4].item() == 2
    prompt = ds.query_prompts[ds.query_prompt[5]]
    text = tok.encode_fn("In: Where is the")
    assert batch.input_ids[3, 1 : 1 + len(text)].tolist() == text
    assert batch.input_ids[3, : len(prompt)].tolist() == prompt.tolist()
    np.testing.assert_allclose(batch.pixel_values[3].numpy(), transform(ds.images[ds.query_image[5]])[0], atol=1e-6)


def test_grounding_needs_our_demo_files(tmp_path, libero_file):
    write_tokenizer(tmp_path / "tok")
    tok = PromptTokenizer.from_dir(tmp_path / "tok")
    config = preset_config(PRESETS["tiny-128"], norm_stats={})
    with pytest.raises(ConfigError, match="ground-frac"):
        load_dataset([str(libero_file)], ImageTransform.from_config(config), tok, ActionTokenizer(), "libero_x", grounding=True)


def test_pair_scenes_are_flagged_and_weighted(demos, tmp_path):
    from export.train import query_weights

    write_tokenizer(tmp_path)
    tok = PromptTokenizer.from_dir(tmp_path)
    transform = ImageTransform.from_config(preset_config(PRESETS["tiny-128"], norm_stats={}))
    ds = load_dataset([str(demos)], transform, tok, ActionTokenizer(), None, grounding=True, task_queries=True)
    # The fixture holds pick (one object) and stack (two blocks) demos: exactly the stack questions are pair ones.
    stack_rows = [i for i, name in enumerate(ds.instructions) if "pick" not in name]
    frame_is_stack = np.isin(ds.instruction_index, stack_rows)
    np.testing.assert_array_equal(ds.query_pair, frame_is_stack[ds.query_image])
    assert ds.query_pair.any() and not ds.query_pair.all()
    assert query_weights(ds, 1.0) is None
    w = query_weights(ds, 4.0).numpy()
    np.testing.assert_array_equal(w, np.where(ds.query_pair, 4.0, 1.0))
    draws = torch.multinomial(torch.from_numpy(w), 4000, replacement=True, generator=torch.Generator().manual_seed(0))
    share = ds.query_pair[draws.numpy()].mean()
    expected = 4 * ds.query_pair.sum() / w.sum()
    assert abs(share - expected) < 0.03
    # --ground-orient-weight multiplies the orientation questions' weight (the fixture's blocks are asked about).
    turned = load_dataset([str(demos)], transform, tok, ActionTokenizer(), None, grounding=True, orientation=True)
    assert turned.query_turn.any() and not turned.query_turn.all() and not ds.query_turn.any()
    w = query_weights(turned, 1.0, 3.0).numpy()
    np.testing.assert_array_equal(w, np.where(turned.query_turn, 3.0, 1.0))
    np.testing.assert_array_equal(query_weights(turned, 4.0, 3.0).numpy(), np.where(turned.query_pair, 4.0, 1.0) * w)


def test_grounding_share_schedule(tmp_path):
    from export.train import TrainConfig, ground_share

    flat = TrainConfig(data="x.hdf5", out=str(tmp_path), ground_frac=0.2)
    assert [ground_share(s, flat) for s in (0, 100, 10_000)] == [0.2, 0.2, 0.2]
    cur = TrainConfig(data="x.hdf5", out=str(tmp_path), ground_frac=0.2, ground_start=0.6, ground_decay_steps=100)
    np.testing.assert_allclose([ground_share(s, cur) for s in (0, 50, 100, 5000)], [0.6, 0.4, 0.2, 0.2])
    with pytest.raises(ConfigError, match="--ground-decay-steps"):
        TrainConfig(data="x.hdf5", out=str(tmp_path), ground_frac=0.2, ground_start=0.6)
    with pytest.raises(ConfigError, match="--ground-frac > 0"):
        TrainConfig(data="x.hdf5", out=str(tmp_path), ground_start=0.6, ground_decay_steps=10)
    with pytest.raises(ConfigError, match="--ground-pair-weight"):
        TrainConfig(data="x.hdf5", out=str(tmp_path), ground_pair_weight=0)
