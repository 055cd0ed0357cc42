"""Counterfactual instructions: swapped tasks stay in the id split, and their labels are what the real
expert does in the simulator when given the swapped task on the recorded frame."""
import numpy as np
import pytest

from export.demos import DemoReader
from sim.data import DemoConfig, write_demos
from sim.recipes.counterfactual import demo_counterfactuals, swapped_tasks
from sim.recipes.grounding import redraw_task, untouched_frames
from sim.tasks import get_family


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
