from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from export.demos import DemoReader, Step, compute_norm_stats, iter_steps, norm_stats_from_arrays
from rlrc_runtime.errors import DatasetError
from sim.data import DemoConfig, run_expert_episode, write_demos
from sim.errors import SimConfigError


def test_round_trip_matches_a_fresh_rollout(demo_file) -> None:
    path, config, summary = demo_file
    assert summary.written == 3 and summary.discarded == 0
    with DemoReader(path) as reader:
        assert reader.is_ours and not reader.flip_images and not reader.convert_gripper
        assert len(reader) == 3 and reader.dataset_name == "rlrc_sim_tabletop"
        demos = list(reader.iter_demos())
    for i, demo in enumerate(demos):
        # Attempt i used family i % 3 and seed config.seed + i; the env is deterministic, so a new
        # rollout must reproduce the stored arrays exactly.
        fresh = run_expert_episode(config.families[i % 3], "id", config.seed + i, config.image_size)
        assert demo.instruction == fresh.instruction
        np.testing.assert_array_equal(demo.images, fresh.images)
        np.testing.assert_array_equal(demo.actions, fresh.actions)
        np.testing.assert_array_equal(demo.proprio, fresh.proprio)
        assert demo.images.shape == (len(demo), 32, 32, 3) and demo.images.dtype == np.uint8
        assert demo.actions.dtype == np.float32 and demo.actions.shape == (len(demo), 7)


def test_file_has_the_libero_robomimic_layout(demo_file) -> None:
    path, _, summary = demo_file
    with h5py.File(path, "r") as f:
        data = f["data"]
        assert data.attrs["num_demos"] == 3 and data.attrs["total"] == summary.total_steps
        assert json.loads(data.attrs["env_args"])["env_name"] == "rlrc_sim/tabletop"
        assert "problem_info" not in data.attrs  # three different instructions
        g = data["demo_1"]
        t = g.attrs["num_samples"]
        assert g.attrs["family"] == "push" and g.attrs["instruction"]
        assert g["actions"].shape == (t, 7) and g["rewards"].shape == (t,) and g["dones"].shape == (t,)
        assert g["rewards"][-1] == 1.0 and g["dones"][-1] == 1 and g["dones"][:-1].sum() == 0
        assert g["obs/agentview_rgb"].shape == (t, 32, 32, 3)
        assert g["obs/ee_pos"].shape == (t, 3) and g["obs/gripper_states"].shape == (t, 2)


def test_single_instruction_file_gets_problem_info(tmp_path: Path) -> None:
    config = DemoConfig(episodes=1, families=("pick",), seed=0, image_size=16)
    write_demos(config, tmp_path / "one.hdf5", progress=False)
    with h5py.File(tmp_path / "one.hdf5", "r") as f:
        info = json.loads(f["data"].attrs["problem_info"])
        assert info["language_instruction"] == f["data/demo_0"].attrs["instruction"]


def test_step_stream(demo_file) -> None:
    path, *_ = demo_file
    with DemoReader(path) as reader:
        steps = list(reader)
        assert len(steps) == reader.num_transitions
    image, instruction, action = steps[0]
    assert isinstance(steps[0], Step) and image.dtype == np.uint8 and image.shape == (32, 32, 3)
    assert isinstance(instruction, str) and action.dtype == np.float32 and action.shape == (7,)
    assert len(list(iter_steps([path, path]))) == 2 * len(steps)


def _write_libero(path: Path, n_demos: int = 11, t: int = 4, instruction: str = "put the bowl on the plate") -> dict:
    """A file laid out as LIBERO publishes it: rotated frames, gripper -1 open / +1 close."""
    rng = np.random.default_rng(0)
    upright = {}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps(
            {"problem_name": "libero_tabletop_manipulation", "domain_name": "robosuite",
             "language_instruction": instruction})
        data.attrs["env_args"] = json.dumps({"env_name": "Libero_Tabletop_Manipulation", "type": 1, "env_kwargs": {}})
        data.attrs["bddl_file_name"] = "libero/bddl_files/x.bddl"
        data.attrs["num_demos"] = n_demos
        data.attrs["total"] = n_demos * t
        for i in range(n_demos):
            g = data.create_group(f"demo_{i}")
            img = rng.integers(0, 256, (t, 8, 10, 3), dtype=np.uint8)
            actions = rng.uniform(-1, 1, (t, 7))
            actions[:, -1] = np.where(np.arange(t) % 2 == 0, -1.0, 1.0)  # open, close, ...
            upright[f"demo_{i}"] = (img.copy(), actions.copy())
            g.attrs["num_samples"] = t
            g.create_dataset("actions", data=actions)  # float64, as LIBERO stores it
            g.create_dataset("rewards", data=np.zeros(t))
            g.create_dataset("dones", data=np.eye(t, dtype=np.uint8)[-1])
            g.create_dataset("states", data=np.zeros((t, 9)))
            g.create_dataset("robot_states", data=np.zeros((t, 9)))
            obs = g.create_group("obs")
            obs.create_dataset("agentview_rgb", data=img[:, ::-1, ::-1])  # stored upside down
            obs.create_dataset("eye_in_hand_rgb", data=img[:, ::-1, ::-1])
            obs.create_dataset("ee_pos", data=rng.normal(size=(t, 3)))
            obs.create_dataset("ee_ori", data=rng.normal(size=(t, 3)))
            obs.create_dataset("ee_states", data=rng.normal(size=(t, 6)))
            obs.create_dataset("gripper_states", data=rng.normal(size=(t, 2)))
            obs.create_dataset("joint_states", data=rng.normal(size=(t, 7)))
    return upright


def test_reads_a_libero_file(tmp_path: Path) -> None:
    path = tmp_path / "libero.hdf5"
    upright = _write_libero(path)
    with DemoReader(path) as reader:
        assert not reader.is_ours and reader.flip_images and reader.convert_gripper
        # Numeric order: demo_10 comes after demo_9, not after demo_1.
        assert reader.demo_keys[-2:] == ["demo_9", "demo_10"]
        demo = reader.read_demo("demo_10")
    img, actions = upright["demo_10"]
    np.testing.assert_array_equal(demo.images, img)
    np.testing.assert_allclose(demo.actions[:, :6], actions[:, :6].astype(np.float32))
    np.testing.assert_array_equal(demo.actions[:, 6], [1.0, 0.0, 1.0, 0.0])  # -1 open -> 1, +1 close -> 0
    assert demo.instruction == "put the bowl on the plate"
    assert demo.proprio.shape == (4, 8)  # ee_pos + ee_ori + gripper_states
    with DemoReader(path, image_key="eye_in_hand_rgb", flip_images=False, convert_gripper=False) as raw:
        d0 = raw.read_demo("demo_0")
        np.testing.assert_array_equal(d0.images, upright["demo_0"][0][:, ::-1, ::-1])
        np.testing.assert_allclose(d0.actions[:, 6], upright["demo_0"][1][:, 6])


def test_libero_instruction_as_token_list(tmp_path: Path) -> None:
    path = tmp_path / "tokens.hdf5"
    _write_libero(path, n_demos=1)
    with h5py.File(path, "a") as f:
        f["data"].attrs["problem_info"] = json.dumps({"language_instruction": ["open", "the", "drawer"]})
    with DemoReader(path) as reader:
        assert reader.instruction("demo_0") == "open the drawer"


def test_reader_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        DemoReader(tmp_path / "missing.hdf5")
    path = tmp_path / "noinstr.hdf5"
    _write_libero(path, n_demos=1)
    with h5py.File(path, "a") as f:
        del f["data"].attrs["problem_info"]
    with DemoReader(path) as reader, pytest.raises(DatasetError, match="instruction="):
        reader.read_demo("demo_0")
    with DemoReader(path, image_key="wrist") as reader, pytest.raises(DatasetError, match="image_key"):
        reader.read_demo("demo_0")
    with pytest.raises(DatasetError, match="dataset_key"):
        compute_norm_stats(path)


def test_norm_stats_match_numpy() -> None:
    rng = np.random.default_rng(1)
    actions = rng.normal(size=(500, 7)).astype(np.float32)
    actions[:, 6] = rng.integers(0, 2, 500)
    proprio = rng.normal(size=(500, 7))
    stats = norm_stats_from_arrays("ds", actions, proprio, num_trajectories=10)
    json.dumps(stats)  # JSON-serialisable as OpenVLA's config.json expects
    a = stats["ds"]["action"]
    x = actions.astype(np.float64)
    np.testing.assert_allclose(a["mean"], x.mean(0))
    np.testing.assert_allclose(a["std"], x.std(0))
    np.testing.assert_allclose(a["min"], x.min(0))
    np.testing.assert_allclose(a["max"], x.max(0))
    np.testing.assert_allclose(a["q01"], np.percentile(x, 1, axis=0))
    np.testing.assert_allclose(a["q99"], np.percentile(x, 99, axis=0))
    assert a["mask"] == [True] * 6 + [False]
    assert stats["ds"]["proprio"]["mask"] == [True] * 7
    np.testing.assert_allclose(stats["ds"]["proprio"]["q99"], np.percentile(proprio, 99, axis=0))
    assert stats["ds"]["num_transitions"] == 500 and stats["ds"]["num_trajectories"] == 10


def test_norm_stats_of_files(demo_file, tmp_path: Path) -> None:
    path, _, summary = demo_file
    stats = compute_norm_stats(path)
    s = stats["rlrc_sim_tabletop"]
    assert s["num_trajectories"] == 3 and s["num_transitions"] == summary.total_steps
    with DemoReader(path) as reader:
        all_actions = np.concatenate([d.actions for d in reader.iter_demos()])
    np.testing.assert_allclose(s["action"]["q01"], np.quantile(all_actions.astype(np.float64), 0.01, axis=0))
    assert 0.0 <= s["action"]["min"][6] and s["action"]["max"][6] <= 1.0
    libero = tmp_path / "libero.hdf5"
    _write_libero(libero)
    ls = compute_norm_stats(libero, "libero_test")["libero_test"]
    assert ls["action"]["min"][6] == 0.0 and ls["action"]["max"][6] == 1.0  # converted gripper
    assert len(ls["proprio"]["mean"]) == 8


def test_demo_config_validation() -> None:
    with pytest.raises(SimConfigError, match="Did you mean 'push'"):
        DemoConfig(families=("puhs",))
    with pytest.raises(SimConfigError, match="episodes"):
        DemoConfig(episodes=0)
    with pytest.raises(SimConfigError, match="max_attempts"):
        DemoConfig(episodes=5, max_attempts=2)


def test_failed_rollouts_are_discarded_and_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import sim.data

    real = sim.data.run_expert_episode

    def every_other_fails(family: str, split: str, seed: int, image_size: int = 128, action_noise: float = 0.0,
                          drop_prob: float = 0.0):
        episode = real(family, split, seed, image_size, action_noise, drop_prob)  # real; only its verdict is overridden
        return dataclasses.replace(episode, success=episode.success and seed % 2 == 0)

    monkeypatch.setattr(sim.data, "run_expert_episode", every_other_fails)
    summary = write_demos(DemoConfig(episodes=2, families=("push",), image_size=16), tmp_path / "d.hdf5",
                          progress=False)
    assert (summary.written, summary.discarded) == (2, 1)
    assert summary.per_family == {"push": {"written": 2, "discarded": 1}}
    with DemoReader(tmp_path / "d.hdf5") as reader:
        assert [reader._data[k].attrs["seed"] for k in reader.demo_keys] == [0, 2]

    with pytest.raises(DatasetError, match="max_attempts"):
        write_demos(DemoConfig(episodes=3, families=("push",), image_size=16, max_attempts=3),
                    tmp_path / "e.hdf5", progress=False)
    assert not list(tmp_path.glob("e.hdf5*"))  # no partial file left behind


def test_dart_noise_records_clean_expert_actions(tmp_path):
    # With noise the executed trajectory differs from the clean one, yet every recorded action is
    # what the closed-loop expert asked for in the state it was in (its labels stay noise-free).
    clean = run_expert_episode("pick", "id", 3, 32)
    noisy = run_expert_episode("pick", "id", 3, 32, action_noise=0.3)
    assert noisy.success
    n = min(len(clean.actions), len(noisy.actions))
    assert not np.allclose(clean.ee_pos[:n], noisy.ee_pos[:n])
    assert np.all(np.abs(noisy.actions[:, :3]) <= 0.03 + 1e-6)  # expert actions, within the step limit
    again = run_expert_episode("pick", "id", 3, 32, action_noise=0.3)
    np.testing.assert_array_equal(again.actions, noisy.actions)  # noise is seeded by the episode seed


@pytest.mark.parametrize("family", ["place", "stack"])
def test_forced_drop_records_the_expert_grasping_again(family):
    # The executed gripper opens after the grasp; the labels stay the expert's: "closed" while it held
    # the block, then an approach with open fingers, then a second close.
    plain = run_expert_episode(family, "id", 0, 32)
    dropped = run_expert_episode(family, "id", 0, 32, drop_prob=1.0)
    assert plain.success and dropped.success
    closes = lambda ep: int(np.sum((ep.actions[:-1, 6] > 0.5) & (ep.actions[1:, 6] < 0.5)))  # noqa: E731
    assert closes(plain) == 1 and closes(dropped) == 2
    assert len(dropped.actions) > len(plain.actions)
    # Both runs are the same episode until after the grasp: the opening is forced only once the block is held.
    n = len(plain.actions)
    first_diff = int(np.argmax(np.any(dropped.actions[:n] != plain.actions, axis=1)))
    assert first_diff > int(np.argmax(plain.actions[:, 6] < 0.5)) + 1
    assert run_expert_episode("push", "id", 1, 32, drop_prob=1.0).actions.shape == \
        run_expert_episode("push", "id", 1, 32).actions.shape  # push has no grasp to drop
    with pytest.raises(SimConfigError, match="drop_prob"):
        DemoConfig(drop_prob=1.5)
