"""Demonstration files: read ours (written by ``rlrc-sim demos``) and LIBERO's, compute norm_stats.

The training side of the data: SFT, BC and pruning calibration read demos through this module,
which needs h5py only (no simulator).

File layout (LIBERO / robomimic HDF5; what we write, and what the reader accepts):

    data/                                   attrs: total, num_demos, env_args (JSON), dataset_name,
                                                   rlrc_sim_format, problem_info (JSON, only when
                                                   every demo shares one instruction)
    data/demo_{i}/                          attrs: num_samples, instruction, family, seed, split, shift
    data/demo_{i}/actions                   float32 [T, 7]  [dx, dy, dz, droll, dpitch, dyaw, gripper]
    data/demo_{i}/rewards                   float32 [T]     reward received after actions[t]
    data/demo_{i}/dones                     uint8   [T]     1 on the last step
    data/demo_{i}/obs/agentview_rgb         uint8   [T, H, W, 3]  observation before actions[t]
    data/demo_{i}/obs/ee_pos                float32 [T, 3]
    data/demo_{i}/obs/ee_ori                float32 [T, 3]  extrinsic XYZ Euler angles
    data/demo_{i}/obs/gripper_states        float32 [T, 2]  finger joint positions, metres
    data/demo_{i}/obs/proprio               float32 [T, 7]  the env's proprio observation

Conventions differ between our files and published LIBERO files, and the reader reconciles them
(a file is "ours" when `data.attrs["rlrc_sim_format"]` exists; anything else is read as LIBERO):
  - images: robosuite renders with OpenGL's bottom-left origin, so LIBERO's agentview/eye-in-hand
    frames are stored rotated by 180 degrees; OpenVLA's LIBERO pipeline undoes it with
    `img[::-1, ::-1]`, and so do we (`flip_images`). Our frames are stored upright.
  - gripper: LIBERO actions use -1 = open, +1 = close; ours (and OpenVLA's training data) use
    1 = open, 0 = closed. LIBERO's last action dim is mapped with OpenVLA's transform
    `clip(1 - a, 0, 1)` (`convert_gripper`).
  - instruction: ours is a per-demo attribute; LIBERO has one per file, in
    `data.attrs["problem_info"]` (JSON, key `language_instruction`).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np

from rlrc_runtime.errors import DatasetError

IMAGE_KEY = "agentview_rgb"
FORMAT_ATTR = "rlrc_sim_format"
"""data.attrs key that marks a file written by ``rlrc-sim demos`` (its value is the format version)."""


# ------------------------------------------------------------------------------------------------
class Step(NamedTuple):
    """One training sample."""

    image: np.ndarray  # uint8 [H, W, 3], upright
    instruction: str
    action: np.ndarray  # float32 [7], gripper 1 = open, 0 = closed


@dataclass
class Demo:
    """One demonstration, converted to our conventions."""

    key: str
    instruction: str
    images: np.ndarray  # uint8 [T, H, W, 3], upright
    actions: np.ndarray  # float32 [T, 7], gripper 1 = open
    proprio: np.ndarray | None  # float32 [T, D] or None when the file has no proprio keys

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def steps(self) -> Iterator[Step]:
        for t in range(len(self)):
            yield Step(self.images[t], self.instruction, self.actions[t])


def _demo_index(key: str) -> int:
    try:
        return int(key.split("_")[-1])
    except ValueError:
        return 1 << 30  # non-numbered groups (e.g. "mask") sort last and are skipped below


class DemoReader:
    """Reads our HDF5 files and published LIBERO files into one stream of `Step`s.

    Args:
        path: HDF5 file.
        image_key: obs key of the frames ("agentview_rgb"; LIBERO also has "eye_in_hand_rgb").
        flip_images: rotate frames by 180 degrees; None = only for LIBERO files (see module doc).
        convert_gripper: map the gripper from LIBERO's -1 open/+1 close to 1 open/0 closed with
            `clip(1 - a, 0, 1)`; None = only for LIBERO files.
        instruction: override for files that carry none.

    Use as a context manager, or call `close()`.
    """

    def __init__(
        self,
        path: str | Path,
        image_key: str = IMAGE_KEY,
        flip_images: bool | None = None,
        convert_gripper: bool | None = None,
        instruction: str | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"demo file {str(self.path)!r} does not exist; generate one with "
                               "`rlrc-sim demos --out FILE.hdf5` or check the path")
        self._file = h5py.File(self.path, "r")
        if "data" not in self._file:
            self._file.close()
            raise DatasetError(f"{self.path}: no 'data' group; expected the LIBERO/robomimic layout data/demo_i/...")
        self._data = self._file["data"]
        self.is_ours = FORMAT_ATTR in self._data.attrs
        self.flip_images = (not self.is_ours) if flip_images is None else flip_images
        self.convert_gripper = (not self.is_ours) if convert_gripper is None else convert_gripper
        self.image_key = image_key
        self._instruction_override = instruction
        self.demo_keys = sorted((k for k in self._data if k.startswith("demo_")), key=_demo_index)
        if not self.demo_keys:
            raise DatasetError(f"{self.path}: 'data' has no demo_* groups")
        self._file_instruction = self._problem_info_instruction()

    @property
    def dataset_name(self) -> str | None:
        """data.attrs["dataset_name"] if the file names itself (ours do), else None."""
        name = self._data.attrs.get("dataset_name")
        return _as_str(name) if name is not None else None

    def _problem_info_instruction(self) -> str | None:
        raw = self._data.attrs.get("problem_info")
        if raw is None:
            return None
        try:
            info = json.loads(_as_str(raw))
        except json.JSONDecodeError as e:
            raise DatasetError(f"{self.path}: data.attrs['problem_info'] is not JSON ({e})") from e
        text = info.get("language_instruction")
        if text is None:
            return None
        if isinstance(text, list):  # some LIBERO tooling stores the BDDL token list
            text = " ".join(str(t) for t in text)
        return str(text).strip().strip('"').strip()

    def instruction(self, key: str) -> str:
        """The instruction of demo `key` (override > per-demo attribute > problem_info)."""
        if self._instruction_override is not None:
            return self._instruction_override
        attr = self._data[key].attrs.get("instruction")
        if attr is not None:
            return _as_str(attr)
        if self._file_instruction is not None:
            return self._file_instruction
        raise DatasetError(
            f"{self.path}: demo {key!r} has no 'instruction' attribute and data.attrs has no "
            "problem_info.language_instruction; pass DemoReader(..., instruction='...')"
        )

    def __len__(self) -> int:
        return len(self.demo_keys)

    @property
    def num_transitions(self) -> int:
        return int(sum(self._data[k]["actions"].shape[0] for k in self.demo_keys))

    def read_demo(self, key: str) -> Demo:
        """Load one demo fully into memory, converted to our conventions."""
        g = self._data[key]
        if "actions" not in g or "obs" not in g or self.image_key not in g["obs"]:
            have = sorted(g["obs"].keys()) if "obs" in g else []
            raise DatasetError(
                f"{self.path}: demo {key!r} lacks 'actions' or 'obs/{self.image_key}' (obs keys: {have}); "
                "pass image_key= one of those")
        actions = np.asarray(g["actions"], dtype=np.float32)  # [T, 7]
        if actions.ndim != 2 or actions.shape[1] != 7:
            raise DatasetError(f"{self.path}: {key}/actions has shape {actions.shape}; expected [T, 7]")
        if self.convert_gripper:
            actions = actions.copy()
            actions[:, -1] = np.clip(1.0 - actions[:, -1], 0.0, 1.0)
        images = np.asarray(g["obs"][self.image_key])  # uint8 [T, H, W, 3]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise DatasetError(f"{self.path}: {key}/obs/{self.image_key} is {images.dtype} {images.shape}; "
                               "expected uint8 [T, H, W, 3]")
        if images.shape[0] != actions.shape[0]:
            raise DatasetError(f"{self.path}: {key} has {images.shape[0]} frames but {actions.shape[0]} actions")
        if self.flip_images:
            images = np.ascontiguousarray(images[:, ::-1, ::-1])
        return Demo(key=key, instruction=self.instruction(key), images=images, actions=actions,
                    proprio=self._proprio(g["obs"]))

    @staticmethod
    def _proprio(obs: h5py.Group) -> np.ndarray | None:
        if "proprio" in obs:
            return np.asarray(obs["proprio"], dtype=np.float32)
        # LIBERO: end-effector position, orientation and the two finger positions (8-D), the
        # state OpenVLA-OFT feeds its proprio projector.
        parts = [k for k in ("ee_pos", "ee_ori", "gripper_states") if k in obs]
        if len(parts) < 3:
            return None
        return np.concatenate([np.asarray(obs[k], dtype=np.float32) for k in parts], axis=1)

    def episode_info(self, key: str) -> tuple[str, str, int, np.ndarray] | None:
        """(family, split, seed, ee_pos [T, 3]) of one of our demos; None for LIBERO files.

        With these the episode's task can be re-drawn from its seed (`sim.recipes.grounding`).
        """
        if not self.is_ours:
            return None
        g = self._data[key]
        a = g.attrs
        if not all(k in a for k in ("family", "split", "seed")) or "ee_pos" not in g["obs"]:
            return None
        return _as_str(a["family"]), _as_str(a["split"]), int(a["seed"]), np.asarray(g["obs"]["ee_pos"], np.float32)

    def iter_demos(self) -> Iterator[Demo]:
        """Demos in index order (demo_0, demo_1, ..., demo_10, ...)."""
        for key in self.demo_keys:
            yield self.read_demo(key)

    def __iter__(self) -> Iterator[Step]:
        """Every step of every demo, in order."""
        for demo in self.iter_demos():
            yield from demo.steps()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> DemoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ------------------------------------------------------------------------------------------------
# norm_stats (OpenVLA convention)
# ------------------------------------------------------------------------------------------------
def _stats(x: np.ndarray, mask: Sequence[bool]) -> dict[str, list[float] | list[bool]]:
    x = x.astype(np.float64)  # [N, D]; float64 so quantiles/std do not depend on storage dtype
    return {
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "max": x.max(0).tolist(),
        "min": x.min(0).tolist(),
        "q01": np.quantile(x, 0.01, axis=0).tolist(),
        "q99": np.quantile(x, 0.99, axis=0).tolist(),
        "mask": [bool(m) for m in mask],
    }


def norm_stats_from_arrays(
    dataset_key: str, actions: np.ndarray, proprio: np.ndarray | None, num_trajectories: int
) -> dict[str, dict[str, Any]]:
    """OpenVLA-style norm_stats for one dataset.

    actions: float [N, 7] over all transitions; proprio: float [N, D] or None (then zeros [7], as
    OpenVLA stores for datasets without proprio). Action mask is True for every dim but the last
    (the gripper, which OpenVLA leaves unnormalized); proprio mask is all True.
    """
    if actions.ndim != 2 or actions.shape[0] == 0:
        raise DatasetError(f"norm_stats: actions have shape {actions.shape}; expected a non-empty [N, D] array")
    d = actions.shape[1]
    if proprio is None:
        proprio_stats = _stats(np.zeros((1, 7)), [True] * 7)
    else:
        proprio_stats = _stats(proprio, [True] * proprio.shape[1])
    return {
        dataset_key: {
            "action": _stats(actions, [True] * (d - 1) + [False]),
            "proprio": proprio_stats,
            "num_transitions": int(actions.shape[0]),
            "num_trajectories": int(num_trajectories),
        }
    }


def compute_norm_stats(
    source: str | Path | DemoReader, dataset_key: str | None = None
) -> dict[str, dict[str, Any]]:
    """norm_stats of a demo file (ours or LIBERO), actions in our gripper convention.

    `dataset_key` defaults to the file's data.attrs["dataset_name"]; LIBERO files carry none,
    so pass it (e.g. "libero_spatial_no_noops").
    """
    reader = source if isinstance(source, DemoReader) else DemoReader(source)
    try:
        key = dataset_key or reader.dataset_name
        if not key:
            raise DatasetError(f"{reader.path}: no data.attrs['dataset_name']; pass dataset_key (CLI: --key NAME)")
        actions, proprio = [], []
        for demo_key in reader.demo_keys:
            g = reader._data[demo_key]
            a = np.asarray(g["actions"], dtype=np.float32)
            if reader.convert_gripper:
                a = a.copy()
                a[:, -1] = np.clip(1.0 - a[:, -1], 0.0, 1.0)
            actions.append(a)
            proprio.append(reader._proprio(g["obs"]) if "obs" in g else None)
        has_proprio = all(p is not None for p in proprio)
        return norm_stats_from_arrays(
            key, np.concatenate(actions), np.concatenate(proprio) if has_proprio else None, len(actions))
    finally:
        if not isinstance(source, DemoReader):
            reader.close()


def save_norm_stats(stats: dict[str, Any], out: str | Path) -> None:
    """Write norm_stats as JSON (the format of OpenVLA's config.json `norm_stats`)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stats, indent=2))


def iter_steps(paths: Iterable[str | Path], **reader_kwargs: Any) -> Iterator[Step]:
    """Steps of several files in turn (e.g. our demos plus LIBERO files)."""
    for path in paths:
        with DemoReader(path, **reader_kwargs) as reader:
            yield from reader
