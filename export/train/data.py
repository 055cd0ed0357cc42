"""Demonstrations in memory and the OpenVLA-style batches built from them.

A demonstration step becomes the sequence ``[BOS, patches, prompt..., 29871, a_1..a_D, EOS]``;
the action tokens and EOS are supervised, the prompt is context. Frames, prompts and action
tokens go through the policy's ``Transforms`` (rlrc_runtime/transforms.py), the same objects the
runtime uses, so a model is trained on exactly what it is later fed.

A *sample* is ``(image row, prompt ids, target ids)``; targets may be shorter than an action
(a benchmark recipe's question answered with a few tokens uses the same path).

With parallel decoding (OpenVLA-OFT style, ``Collator(parallel=True)``) a sample's targets are the
tokens of an action chunk, ``K x D`` of them, and the sequence is ``[BOS, patches, prompt, K x D
empty slots]``: the output at each slot predicts its own token, and a target of ``IGNORE`` (the
chunk runs past the end of its episode) is not supervised.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Sequence

import numpy as np
import torch

from export.demos import Demo, DemoReader, norm_stats_from_arrays
from rlrc_runtime.action import action_stats
from rlrc_runtime.errors import ConfigError, DatasetError
from rlrc_runtime.transforms import Transforms

log = logging.getLogger(__name__)

IGNORE = -1
"""A chunk target that is not supervised (the future action lies past the episode's end)."""

Sample = tuple[int, np.ndarray, np.ndarray]
"""(row of ``DemoSteps.images``, prompt token ids [T], target token ids [D])."""

DemoHook = Callable[[DemoReader, Demo, int], None]
"""Called for every demo as it is read, with the row of its first frame (recipes collect extras)."""


@dataclass
class DemoSteps:
    """Every demonstration step in memory, ready to batch."""

    images: np.ndarray  # [N, S, S, 3] uint8, resized to the model's input size
    tokens: np.ndarray  # [N, K * D] int64 action token ids of steps t .. t + K - 1 (IGNORE past the episode)
    instruction_index: np.ndarray  # [N] int64 into prompts
    prompts: list[np.ndarray]  # token ids of each distinct instruction (BOS ... 29871)
    instructions: list[str]
    norm_stats: dict[str, Any]
    dataset_key: str

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def sample(self, i: int) -> Sample:
        """Demonstration step ``i`` as a sample."""
        return i, self.prompts[self.instruction_index[i]], self.tokens[i]


def load_demos(files: Sequence[str], transforms: Transforms, dataset_key: str | None,
               norm_stats: dict[str, Any] | None = None, on_demo: DemoHook | None = None, chunk: int = 1) -> DemoSteps:
    """Read demo files (ours or LIBERO's), compute norm_stats unless ``norm_stats`` already has
    ``dataset_key``, and tokenize every instruction and action with ``transforms``; each step's
    targets are the ``chunk`` actions from it on."""
    images, actions, proprio, instr_of_step = [], [], [], []
    names: dict[str, int] = {}
    n_demos = offset = 0
    for path in files:
        with DemoReader(path) as reader:
            dataset_key = dataset_key or reader.dataset_name
            for demo in reader.iter_demos():
                n_demos += 1
                if on_demo is not None:
                    on_demo(reader, demo, offset)
                offset += len(demo)
                idx = names.setdefault(demo.instruction, len(names))
                images.append(np.stack([transforms.image.resize(im) for im in demo.images]))
                actions.append(demo.actions)
                if demo.proprio is not None:
                    proprio.append(demo.proprio)
                instr_of_step.append(np.full(len(demo), idx, np.int64))
    if not actions:
        raise DatasetError(f"--data {list(files)}: no demonstrations found")
    if not dataset_key:
        raise ConfigError("the demo files carry no dataset_name; pass --dataset-key NAME")
    acts = np.concatenate(actions)
    if norm_stats is None or dataset_key not in norm_stats:
        prop = np.concatenate(proprio) if len(proprio) == len(actions) else None
        norm_stats = norm_stats_from_arrays(dataset_key, acts, prop, n_demos)
    stats = action_stats(norm_stats, dataset_key)
    if stats.action_dim != acts.shape[1]:
        raise DatasetError(f"norm_stats[{dataset_key!r}] has {stats.action_dim} action dims, the data {acts.shape[1]}")
    instructions = list(names)
    tokens = transforms.encode_actions(acts, stats)  # [N, D]
    if chunk > 1:
        tokens = np.concatenate([chunk_targets(part, chunk) for part in np.split(tokens, np.cumsum(
            [len(a) for a in actions])[:-1])])
    return DemoSteps(
        images=np.concatenate(images),
        tokens=tokens,
        instruction_index=np.concatenate(instr_of_step),
        prompts=[transforms.prompt(t) for t in instructions],
        instructions=instructions,
        norm_stats=norm_stats,
        dataset_key=dataset_key,
    )


def chunk_targets(tokens: np.ndarray, chunk: int) -> np.ndarray:
    """One episode's action tokens [T, D] -> chunk targets [T, chunk * D]: row t holds the tokens of
    steps t .. t + chunk - 1, IGNORE where those run past the episode's last step."""
    t, d = tokens.shape
    padded = np.concatenate([tokens, np.full((chunk - 1, d), IGNORE, tokens.dtype)])
    return np.stack([padded[i : i + chunk].reshape(-1) for i in range(t)])


@dataclass
class Batch:
    pixel_values: torch.Tensor  # [B, 3 * n_towers, S, S] float32
    input_ids: torch.Tensor  # [B, T] int64, right-padded
    label_rows: torch.Tensor  # [M] batch row of each supervised token
    label_pos: torch.Tensor  # [M] multimodal position whose output predicts it
    labels: torch.Tensor  # [M] target ids
    is_action: torch.Tensor  # [M] bool, False for EOS
    first_target_pos: torch.Tensor  # [B] position whose output predicts the row's first target token
    prompt_lens: torch.Tensor  # [B] prompt ids of each row (BOS ... 29871)
    n_slots: torch.Tensor  # [B] parallel decoding: empty action slots after the prompt; 0 = autoregressive
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # per-row [B, ...] values of a recipe

    def to(self, device: torch.device | str) -> "Batch":
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self) if f.name != "extras"}
        return Batch(**moved, extras={k: v.to(device) for k, v in self.extras.items()})


@dataclass(frozen=True)
class Collator:
    """Samples -> a Batch. Built once per dataset; ``shift`` > 0 randomly shifts frames (training);
    ``parallel``: the targets go in empty slots after the prompt (parallel decoding), not after each other."""

    images: np.ndarray  # [N, S, S, 3] uint8, the frames samples point into
    transforms: Transforms
    num_patches: int
    pad_id: int
    eos_id: int
    shift: int = 0
    parallel: bool = False

    def __call__(self, samples: Sequence[Sample], gen: torch.Generator | None = None,
                 extras: dict[str, np.ndarray] | None = None) -> Batch:
        rows_img = np.asarray([s[0] for s in samples], np.int64)
        frames = self.images[rows_img]  # [B, S, S, 3]
        if self.shift and gen is not None:
            frames = random_shift(frames, self.shift, gen)
        pixel_values = torch.from_numpy(self.transforms.pixel_values(frames))
        if self.parallel:
            return self._parallel(samples, pixel_values, extras)
        seqs = [np.concatenate([prompt, target, [self.eos_id]]) for _, prompt, target in samples]
        ids = np.full((len(seqs), max(len(s) for s in seqs)), self.pad_id, np.int64)
        rows, pos, labels, is_action, first_pos = [], [], [], [], []
        for b, ((_, _, target), s) in enumerate(zip(samples, seqs)):
            ids[b, : len(s)] = s
            first = len(s) - len(target) - 1  # text index of the first target token
            first_pos.append(self.num_patches + first - 1)
            for j in range(first, len(s)):
                rows.append(b)
                pos.append(self.num_patches + j - 1)
                labels.append(s[j])
                is_action.append(j < len(s) - 1)
        return Batch(pixel_values, torch.from_numpy(ids), torch.tensor(rows), torch.tensor(pos), torch.tensor(labels),
                     torch.tensor(is_action), torch.tensor(first_pos), torch.tensor([len(p) for _, p, _ in samples]),
                     torch.zeros(len(samples), dtype=torch.int64), _extras(extras))

    def _parallel(self, samples: Sequence[Sample], pixel_values: torch.Tensor,
                  extras: dict[str, np.ndarray] | None) -> Batch:
        """``[BOS, patches, prompt[1:], slots, pad]``: slot k of a row sits at position P + len(prompt) + k and
        predicts target k; IGNORE targets are not supervised; no EOS follows a chunk."""
        width = max(len(p) + len(t) for _, p, t in samples)
        ids = np.full((len(samples), width), self.pad_id, np.int64)
        rows, pos, labels, first_pos = [], [], [], []
        for b, (_, prompt, target) in enumerate(samples):
            ids[b, : len(prompt)] = prompt  # the slots keep pad ids: their embeddings are replaced by zeros
            first = self.num_patches + len(prompt)
            first_pos.append(first)
            for k in np.flatnonzero(np.asarray(target) != IGNORE):
                rows.append(b)
                pos.append(first + int(k))
                labels.append(int(target[k]))
        return Batch(pixel_values, torch.from_numpy(ids), torch.tensor(rows, dtype=torch.int64),
                     torch.tensor(pos, dtype=torch.int64), torch.tensor(labels, dtype=torch.int64),
                     torch.ones(len(labels), dtype=torch.bool), torch.tensor(first_pos),
                     torch.tensor([len(p) for _, p, _ in samples]), torch.tensor([len(t) for _, _, t in samples]),
                     _extras(extras))


def _extras(extras: dict[str, np.ndarray] | None) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in (extras or {}).items()}


def random_shift(frames: np.ndarray, pad: int, gen: torch.Generator) -> np.ndarray:
    """Shift each frame [B, S, S, 3] by up to ``pad`` pixels, edges replicated (DrQ-style augmentation)."""
    b, h, w, _ = frames.shape
    padded = np.pad(frames, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).tolist()
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).tolist()
    return np.stack([padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
