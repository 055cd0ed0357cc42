"""Grounding queries: answers re-drawn from the episode seed match the simulator."""
import numpy as np
import pytest

from export.demos import DemoReader
from sim.data import DemoConfig, write_demos
from sim.recipes.grounding import (ANSWER_RANGES, SYMMETRY, TASK_NAME, demo_queries, denormalise_answer, episode_objects,
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


def test_orientation_queries_for_blocks_and_bars_only(demos):
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


def test_orientation_queries_of_chosen_kinds():
    """A clutter scene with a bar and blocks is asked how the bar is turned, not the blocks."""
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
