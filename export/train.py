"""``rlrc-train``: train an OpenVLA-architecture policy on demonstrations, as OpenVLA does.

Each sample is ``[BOS, patches, prompt..., 29871, a_1..a_7, EOS]``; the loss is cross-entropy on
the 7 action tokens and EOS only (the prompt is context). From scratch (``--preset``) or from a
checkpoint (``--init``; this is the SFT stage of RLRC recovery). AdamW, linear warm-up + cosine
decay, gradient accumulation, fp32 or bf16 autocast, periodic checkpoints, exact resume, and
``torchrun`` (DDP: gloo on CPU, nccl on GPU) with the same command.

Batches are sampled with a generator seeded by (seed, step, rank), so a run resumed from its last
state continues exactly as if it had never stopped.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export.attn_sup import AttentionSupervision, RoleSupervision
from export.checkpoint import copy_tokenizer, load_model, save_checkpoint
from export.model import OpenVLA, init_weights
from export.tiny import get_preset, preset_config
from export.tokenizer_gen import write_tokenizer
from rlrc_runtime.action import ActionTokenizer, action_stats
from rlrc_runtime.cli_args import run_command
from rlrc_runtime.config import VLAConfig
from rlrc_runtime.errors import ConfigError
from rlrc_runtime.preprocess import ImageTransform
from rlrc_runtime.prompt import PromptTokenizer

log = logging.getLogger(__name__)

IGNORE = -100
STATE_FILE = "trainer_state.pt"


@dataclass(frozen=True)
class TrainConfig:
    data: str = field(metadata={"help": "demonstration HDF5 file(s), comma-separated (ours or LIBERO layout)"})
    out: str = field(metadata={"help": "output directory (checkpoints, state, metrics, final/)"})
    init: str | None = field(default=None, metadata={"help": "checkpoint to fine-tune; default: from scratch with --preset"})
    preset: str = field(default="base-128", metadata={"help": "model preset when training from scratch"})
    dataset_key: str | None = field(default=None, metadata={"help": "norm_stats key; default: the file's dataset_name"})
    steps: int = field(default=2000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=32, metadata={"help": "samples per micro-batch (per process)"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "final lr as a fraction of the peak (cosine)"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on norms, biases, embeddings)"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient-norm clip"})
    precision: str = field(default="fp32", metadata={"help": "fp32, or bf16 autocast", "choices": ["fp32", "bf16"]})
    augment: bool = field(default=True, metadata={"help": "random image shifts of up to --shift pixels"})
    shift: int = field(default=6, metadata={"help": "max shift of the augmentation, pixels"})
    pos_init: str = field(default="sincos", metadata={"help": "from scratch: initial position embeddings of the "
                                                   "towers", "choices": ["sincos", "random"]})
    ground_frac: float = field(default=0.0, metadata={"help": "fraction of each batch spent on grounding queries "
                                                      "('where is the red block?' answered with its position as action "
                                                      "tokens, RT-2-style co-training; our demo files only). 0 = off"})
    ground_task: bool = field(default=False, metadata={"help": "with --ground-frac: also ask where the object the "
                                                    "instruction moves is ('where is the object to move to <instruction>?')"
                                                    ", which binds the instruction's words to its target"})
    ground_orient: bool = field(default=False, metadata={"help": "with --ground-frac: also ask how each block and bar "
                                                      "is turned ('how is the red bar turned?', answered with its yaw on "
                                                      "its symmetry period, the turn to the nearest grasp yaw and the "
                                                      "hand's yaw; sim/grounding.py)"})
    ground_orient_kinds: str = field(default="block,bar", metadata={"help": "with --ground-orient: the kinds asked "
                                                                    "about, comma-separated from block, bar (bar alone "
                                                                    "keeps the 'where' questions' share in block scenes)"})
    ground_start: float | None = field(default=None, metadata={"help": "grounding share of the first step; it moves "
                                                               "linearly to --ground-frac over --ground-decay-steps (a "
                                                               "binding curriculum: learn to find the named object first). "
                                                               "Default: --ground-frac throughout"})
    ground_decay_steps: int = field(default=0, metadata={"help": "steps over which the grounding share goes from "
                                                         "--ground-start to --ground-frac"})
    ground_pair_weight: float = field(default=1.0, metadata={"help": "sampling weight of grounding questions about "
                                                             "scenes with two or more objects (where a colour or kind "
                                                             "word must pick one), against 1 for one-object scenes"})
    ground_orient_weight: float = field(default=1.0, metadata={"help": "with --ground-orient: sampling weight of the "
                                                               "orientation questions against 1 for the 'where' ones "
                                                               "(4 asks bars about 4x as often)"})
    attn_sup: float = field(default=0.0, metadata={"help": "weight of attention supervision: one decoder head's "
                                                 "attention from each colour word of a prompt is pulled towards "
                                                 "the patches of that colour (export/attn_sup.py; training only). "
                                                 "0 = off"})
    attn_sup_layer: int = field(default=0, metadata={"help": "decoder layer of the supervised head"})
    attn_sup_head: int = field(default=0, metadata={"help": "supervised head within --attn-sup-layer"})
    attn_role: float = field(default=0.0, metadata={"help": "weight of role attention supervision: at the position "
                                                  "that predicts the first action token, head 0 of --attn-role-layer "
                                                  "is pulled towards the patches of the object the instruction moves "
                                                  "and the first head of the other key/value group towards its goal "
                                                  "object (export/attn_sup.py; training only; our demo files). 0 = off"})
    attn_role_layer: int = field(default=1, metadata={"help": "decoder layer of the two --attn-role heads"})
    attn_role_tokens: int = field(default=1, metadata={"help": "--attn-role supervises the positions predicting the "
                                                         "first N action tokens (2 = dx and dy: each is predicted "
                                                         "at its own position, and an unsupervised one stays unbound)"})
    counterfactual_frac: float = field(default=0.0, metadata={"help": "fraction of each batch spent on counterfactual "
                                                              "pairs: an untouched stack or push frame with its own "
                                                              "instruction and action, and again with the words swapped "
                                                              "(the other block, another side) and the expert's action "
                                                              "for that (sim/counterfactual.py; our demo files only). 0 = off"})
    label_sigma: float = field(default=0.0, metadata={"help": "soft action-token targets: a Gaussian of this many bins "
                                                      "around the true bin (HL-Gauss); 0 = OpenVLA's one-hot CE"})
    head_rows: str = field(default="all", metadata={"help": "'targets': the lm_head rows that are never a target "
                                                   "(all but the 256 action rows and EOS) are zero and stay zero, so "
                                                   "their logits are 0 and the full-vocabulary softmax is computed "
                                                   "exactly from the 257 target rows plus one constant term (the "
                                                   "head's cost falls ~125x; the checkpoint still decodes over the "
                                                   "whole vocabulary). From scratch, or from a model trained so. "
                                                   "'all': every row trained, as OpenVLA",
                                           "choices": ["all", "targets"]})
    ema: float = field(default=0.0, metadata={"help": "decay of an exponential moving average of the weights, "
                                          "written as final_ema/ beside final/; training itself is unchanged "
                                          "(final/ is the same with or without it). 0 = off, e.g. 0.999"})
    save_every: int = field(default=500, metadata={"help": "write state + a checkpoint every N steps"})
    log_every: int = field(default=25, metadata={"help": "log metrics every N steps"})
    keep_checkpoints: int = field(default=2, metadata={"help": "periodic checkpoints kept (oldest deleted)"})
    seed: int = field(default=0, metadata={"help": "seed of init and sampling"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 = torch default"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, or auto (cuda when available)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    stop_after: int = field(default=0, metadata={"help": "stop (state saved) after this many steps in this run; "
                                                 "0 = run to --steps. For time-sliced jobs; rerun to resume"})

    @property
    def orient_kinds(self) -> tuple[str, ...]:
        """--ground-orient-kinds as a tuple of kinds."""
        return tuple(k for k in self.ground_orient_kinds.split(",") if k)

    def __post_init__(self) -> None:
        if not 0.0 <= self.ground_frac < 1.0:
            raise ConfigError(f"--ground-frac={self.ground_frac} must be in [0, 1)")
        if self.ground_task and self.ground_frac == 0:
            raise ConfigError("--ground-task adds questions to the grounding share of each batch; pass --ground-frac "
                              "too (e.g. 0.2)")
        if self.ground_orient and self.ground_frac == 0:
            raise ConfigError("--ground-orient adds questions to the grounding share of each batch; pass --ground-frac "
                              "too (e.g. 0.2)")
        from sim.grounding import SYMMETRY
        if not self.orient_kinds or any(k not in SYMMETRY for k in self.orient_kinds):
            raise ConfigError(f"--ground-orient-kinds={self.ground_orient_kinds!r}: give a comma-separated subset of "
                              f"{', '.join(SYMMETRY)} (the kinds that have an orientation)")
        if self.ground_start is not None:
            if not 0.0 <= self.ground_start < 1.0 or self.ground_frac == 0:
                raise ConfigError(f"--ground-start={self.ground_start} must be in [0, 1) and needs --ground-frac > 0")
            if self.ground_decay_steps < 1:
                raise ConfigError("--ground-start needs --ground-decay-steps >= 1 (steps to reach --ground-frac)")
        if not 0.0 <= self.counterfactual_frac < 1.0 or self.ground_frac + self.counterfactual_frac >= 1.0:
            raise ConfigError(f"--counterfactual-frac={self.counterfactual_frac} must be in [0, 1) and leave room for "
                              f"demonstration steps beside --ground-frac={self.ground_frac} (their sum < 1)")
        if self.counterfactual_frac > 0 and round(self.batch_size * self.counterfactual_frac / 2) == 0:
            raise ConfigError(f"--counterfactual-frac={self.counterfactual_frac} gives no pair in a batch of "
                              f"{self.batch_size} (each pair is two rows); use at least "
                              f"{2.0 / self.batch_size:.3g} (one pair), or drop the option")
        if self.ground_pair_weight <= 0:
            raise ConfigError(f"--ground-pair-weight={self.ground_pair_weight} must be > 0 (1 = uniform)")
        if self.ground_orient_weight <= 0 or (self.ground_orient_weight != 1.0 and not self.ground_orient):
            raise ConfigError(f"--ground-orient-weight={self.ground_orient_weight} must be > 0 and weighs the "
                              "orientation questions: pass --ground-orient too (1 = uniform)")
        if self.attn_role < 0 or self.attn_role_layer < 0:
            raise ConfigError(f"--attn-role={self.attn_role} and --attn-role-layer={self.attn_role_layer} must be >= 0 "
                              "(--attn-role 0 = off)")
        if not 1 <= self.attn_role_tokens <= 7:
            raise ConfigError(f"--attn-role-tokens={self.attn_role_tokens} must be in [1, 7] (the action's tokens, "
                              "from the first)")
        if self.attn_sup < 0 or self.attn_sup_layer < 0 or self.attn_sup_head < 0:
            raise ConfigError(f"--attn-sup={self.attn_sup}, --attn-sup-layer={self.attn_sup_layer} and "
                              f"--attn-sup-head={self.attn_sup_head} must be >= 0 (--attn-sup 0 = off)")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"--ema={self.ema} must be in [0, 1) (0 = off; 0.999 averages over ~1000 steps)")
        if self.stop_after < 0:
            raise ConfigError(f"--stop-after={self.stop_after} must be >= 0")
        for name in ("steps", "batch_size", "grad_accum", "save_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}={getattr(self, name)} must be >= 1")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ConfigError(f"--warmup-steps={self.warmup_steps} must be in [0, --steps={self.steps}]")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"--lr={self.lr} must be > 0 and --min-lr-ratio={self.min_lr_ratio} in [0, 1]")
        if self.shift < 0:
            raise ConfigError(f"--shift={self.shift} must be >= 0")
        if not 0 <= self.label_sigma <= 32:
            raise ConfigError(f"--label-sigma={self.label_sigma} must be in [0, 32] bins (0 = one-hot, e.g. 2)")
        if not self.data:
            raise ConfigError("--data is empty; pass one or more HDF5 files")

    @property
    def data_files(self) -> list[str]:
        return [p for p in self.data.split(",") if p]


# --------------------------------------------------------------------------- data


@dataclass
class ActionDataset:
    """Every demonstration step in memory, ready to batch."""

    images: np.ndarray  # [N, S, S, 3] uint8, resized to the model's input size
    tokens: np.ndarray  # [N, D] int64 action token ids
    instruction_index: np.ndarray  # [N] int64 into prompts
    prompts: list[np.ndarray]  # token ids of each distinct instruction (BOS ... 29871)
    instructions: list[str]
    norm_stats: dict[str, Any]
    dataset_key: str
    # Grounding queries (sim.grounding), empty unless requested: image row, prompt, answer tokens.
    query_image: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [Q] into images
    query_prompt: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [Q] into query_prompts
    query_tokens: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))  # [Q, 4]
    query_prompts: list[np.ndarray] = field(default_factory=list)
    query_pair: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # [Q] asked in a scene of >= 2 objects
    query_turn: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # [Q] an orientation ("turn") question
    # Colours (palette indices of sim.tasks.COLOURS) of each step's target and goal object, -1 = none or
    # unknown; filled when requested (--attn-role), else empty.
    step_roles: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))  # [N, 2]
    # Counterfactual samples (sim.counterfactual), empty unless requested: image row, index into prompts,
    # action tokens of the swapped instruction, and a sampling weight (each family gets an equal share).
    cf_image: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [C] into images
    cf_prompt: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [C] into prompts
    cf_tokens: np.ndarray = field(default_factory=lambda: np.zeros((0, 7), np.int64))  # [C, D]
    cf_weight: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))  # [C]
    # Roles (as step_roles) of each counterfactual's swapped instruction; filled with step_roles.
    cf_roles: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))  # [C, 2]

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def action_sample(self, i: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(image row, prompt ids, target ids) of demonstration step i."""
        return i, self.prompts[self.instruction_index[i]], self.tokens[i]

    def query_sample(self, q: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(image row, prompt ids, target ids) of grounding query q."""
        return int(self.query_image[q]), self.query_prompts[self.query_prompt[q]], self.query_tokens[q]

    def counterfactual_samples(self, c: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """The pair of counterfactual c: its frame as recorded, then the same image with the swapped instruction."""
        row = int(self.cf_image[c])
        return [self.action_sample(row), (row, self.prompts[self.cf_prompt[c]], self.cf_tokens[c])]


def load_dataset(
    files: list[str],
    transform: ImageTransform,
    tokenizer: PromptTokenizer,
    action_tokenizer: ActionTokenizer,
    dataset_key: str | None,
    norm_stats: dict[str, Any] | None = None,
    grounding: bool = False,
    task_queries: bool = False,
    roles: bool = False,
    counterfactuals: bool = False,
    orientation: bool = False,
    orient_kinds: tuple[str, ...] | None = None,
) -> ActionDataset:
    """Read demos, compute (or reuse) norm_stats, and tokenize actions and instructions.

    With ``grounding`` the grounding queries of every demo of ours are built too (sim.grounding),
    with ``task_queries`` including "where is the object to move to <instruction>?" and with ``orientation``
    "how is the <colour> <block or bar> turned?" (of the kinds in ``orient_kinds``; default both). With ``roles`` the
    colours of each step's target and goal objects are looked up too (``step_roles``, for --attn-role).
    With ``counterfactuals`` the swapped-instruction samples of every stack and push demo of ours are
    built (sim.counterfactual, for --counterfactual-frac).
    """
    from sim.data import DemoReader, norm_stats_from_arrays
    images, actions, proprio, instr_of_step = [], [], [], []
    names: dict[str, int] = {}
    n_demos = 0
    offset = 0
    q_image, q_prompt, q_answer, q_pair, q_turn, q_names = [], [], [], [], [], {}
    step_roles: list[np.ndarray] = []
    cf_image, cf_instr, cf_action, cf_family, cf_roles = [], [], [], [], []
    for path in files:
        with DemoReader(path) as reader:
            key = dataset_key or reader.dataset_name
            dataset_key = key
            for demo in reader.iter_demos():
                n_demos += 1
                if grounding:
                    queries = _demo_queries(reader, demo, task_queries, orientation, orient_kinds)
                    n_objects = len({q.name for q in queries}) - int(task_queries)
                    for q in queries:
                        q_image.append(offset + q.frame)
                        q_prompt.append(q_names.setdefault((q.template, q.name), len(q_names)))
                        q_answer.append(q.answer)
                        q_pair.append(n_objects >= 2)
                        q_turn.append(q.question == "turn")
                demo_roles = _demo_roles(reader, demo) if roles else None
                if demo_roles is not None:
                    step_roles.append(np.tile(demo_roles, (len(demo), 1)))
                if counterfactuals:
                    for cf, family in _demo_counterfactuals(reader, demo):
                        cf_image.append(offset + cf.frame)
                        cf_instr.append(names.setdefault(cf.instruction, len(names)))
                        cf_action.append(cf.action)
                        cf_family.append(family)
                        if demo_roles is not None:
                            # A swapped stack instruction moves the other block onto this one; a swapped push
                            # instruction moves the same block to another side.
                            cf_roles.append(demo_roles[::-1] if family == "stack" else demo_roles)
                offset += len(demo)
                idx = names.setdefault(demo.instruction, len(names))
                images.append(np.stack([transform.resize(im) for im in demo.images]))
                actions.append(demo.actions)
                if demo.proprio is not None:
                    proprio.append(demo.proprio)
                instr_of_step.append(np.full(len(demo), idx, np.int64))
    if not actions:
        raise ConfigError(f"--data {files}: no demonstrations found")
    if not dataset_key:
        raise ConfigError("the demo files carry no dataset_name; pass --dataset-key NAME")
    acts = np.concatenate(actions)
    if norm_stats is None or dataset_key not in norm_stats:
        prop = np.concatenate(proprio) if len(proprio) == len(actions) else None
        norm_stats = norm_stats_from_arrays(dataset_key, acts, prop, n_demos)
    stats = action_stats(norm_stats, dataset_key)
    if stats.action_dim != acts.shape[1]:
        raise ConfigError(f"norm_stats[{dataset_key!r}] has {stats.action_dim} action dims, the data {acts.shape[1]}")
    instructions = list(names)
    if grounding and not q_image:
        raise ConfigError(f"--ground-frac needs demo files written by `rlrc-sim demos` (episode seeds and hand "
                          f"positions); {files} gave no grounding queries. Use --ground-frac 0 for other data")
    if roles and not (np.concatenate(step_roles) >= 0).any():
        raise ConfigError(f"--attn-role needs demo files written by `rlrc-sim demos` (episode seeds); {files} "
                          "gave no step with a known target colour. Use --attn-role 0 for other data")
    if counterfactuals and not cf_image:
        raise ConfigError(f"--counterfactual-frac needs stack or push demos of the id split written by `rlrc-sim "
                          f"demos` (episode seeds and proprio); {files} gave none. Use --counterfactual-frac 0")
    _, family_of, family_size = np.unique(np.asarray(cf_family, dtype=str), return_inverse=True, return_counts=True)
    cf_weight = 1.0 / family_size[family_of].astype(np.float64)
    return ActionDataset(
        images=np.concatenate(images),
        tokens=action_tokenizer.encode(stats.normalize(acts)).astype(np.int64),
        instruction_index=np.concatenate(instr_of_step),
        prompts=[tokenizer(t) for t in instructions],
        instructions=instructions,
        norm_stats=norm_stats,
        dataset_key=dataset_key,
        query_image=np.asarray(q_image, np.int64),
        query_prompt=np.asarray(q_prompt, np.int64),
        query_tokens=action_tokenizer.encode(np.asarray(q_answer).reshape(-1, 4)).astype(np.int64),
        query_prompts=[dataclasses.replace(tokenizer, template=template)(name) for template, name in q_names],
        query_pair=np.asarray(q_pair, bool),
        query_turn=np.asarray(q_turn, bool),
        step_roles=np.concatenate(step_roles) if roles else np.zeros((0, 2), np.int64),
        cf_image=np.asarray(cf_image, np.int64),
        cf_prompt=np.asarray(cf_instr, np.int64),
        cf_tokens=(action_tokenizer.encode(stats.normalize(np.asarray(cf_action).reshape(-1, acts.shape[1])))
                   .astype(np.int64)),
        cf_weight=cf_weight,
        cf_roles=np.asarray(cf_roles, np.int64).reshape(-1, 2),
    )


def _demo_queries(reader: Any, demo: Any, task_queries: bool, orientation: bool = False,
                  orient_kinds: tuple[str, ...] | None = None) -> list[Any]:
    from sim.grounding import SYMMETRY, demo_queries

    info = reader.episode_info(demo.key)
    if info is None:
        return []
    family, split, seed, ee_pos = info
    # Our demos' proprio is [x, y, z, roll, pitch, yaw, gripper] (sim.env).
    hand_yaw = demo.proprio[:, 5] if orientation and demo.proprio is not None else None
    return demo_queries(family, split, seed, demo.instruction, ee_pos, task_queries, hand_yaw,
                        tuple(SYMMETRY) if orient_kinds is None else orient_kinds)


def _demo_counterfactuals(reader: Any, demo: Any) -> list[tuple[Any, str]]:
    """(sim.counterfactual.Counterfactual, family) of every swapped-instruction sample of one demo."""
    from sim.counterfactual import demo_counterfactuals

    info = reader.episode_info(demo.key)
    if info is None or demo.proprio is None:
        return []
    family, split, seed, _ = info
    return [(cf, family) for cf in demo_counterfactuals(family, split, seed, demo.instruction, demo.proprio)]


def _demo_roles(reader: Any, demo: Any) -> np.ndarray:
    """[2] palette indices of the demo's target and goal colours (-1 = none, ambiguous or unknown)."""
    from sim.grounding import episode_roles
    from sim.tasks import COLOURS

    info = reader.episode_info(demo.key)
    if info is None:
        return np.full(2, -1, np.int64)
    family, split, seed, _ = info
    palette = list(COLOURS)
    return np.asarray([palette.index(c) if c is not None else -1
                       for c in episode_roles(family, split, seed, demo.instruction)], np.int64)


@dataclass
class Batch:
    pixel_values: torch.Tensor  # [B, 3 * n_towers, S, S] float32
    input_ids: torch.Tensor  # [B, T] int64, right-padded
    label_rows: torch.Tensor  # [M] batch row of each supervised token
    label_pos: torch.Tensor  # [M] multimodal position whose output predicts it
    labels: torch.Tensor  # [M] target ids
    is_action: torch.Tensor  # [M] bool, False for EOS
    query_pos: torch.Tensor  # [B] position whose output predicts the row's first target token
    roles: torch.Tensor  # [B, 2] target / goal colour of the row (ActionDataset.step_roles), -1 = none

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))


def make_batch(ds: ActionDataset, idx: np.ndarray, transform: ImageTransform, num_patches: int, pad_id: int,
               eos_id: int, gen: torch.Generator | None = None, shift: int = 0,
               query_idx: np.ndarray | None = None, cf_idx: np.ndarray | None = None) -> Batch:
    """Sample indices (+ grounding query indices, + counterfactual pair indices, two rows each) -> a Batch
    (images normalised exactly as the runtime's ImageTransform). Every sequence is [BOS, patches, prompt,
    targets, EOS]; targets and EOS are supervised."""
    samples = [ds.action_sample(int(i)) for i in idx]
    if query_idx is not None:
        samples += [ds.query_sample(int(q)) for q in query_idx]
    if cf_idx is not None:
        samples += [s for c in cf_idx for s in ds.counterfactual_samples(int(c))]
    rows_img = np.asarray([s[0] for s in samples], np.int64)
    imgs = torch.from_numpy(ds.images[rows_img]).permute(0, 3, 1, 2).to(torch.float32)  # [B, 3, S, S]
    if shift and gen is not None:
        imgs = random_shift(imgs, shift, gen)
    x = imgs / 255.0
    planes = [(x - torch.tensor(m)[:, None, None]) / torch.tensor(s)[:, None, None]
              for m, s in zip(transform.means, transform.stds)]
    seqs = [(np.concatenate([prompt, target, [eos_id]]), len(target)) for _, prompt, target in samples]
    width = max(len(s) for s, _ in seqs)
    ids = np.full((len(seqs), width), pad_id, np.int64)
    rows, pos, labels, is_action, query_pos = [], [], [], [], []
    for b, (s, d) in enumerate(seqs):
        ids[b, : len(s)] = s
        first = len(s) - d - 1  # text index of the first target token
        query_pos.append(num_patches + first - 1)
        for j in range(first, len(s)):
            rows.append(b)
            pos.append(num_patches + j - 1)
            labels.append(s[j])
            is_action.append(j < len(s) - 1)
    roles = np.full((len(samples), 2), -1, np.int64)  # grounding questions have no roles
    if len(ds.step_roles):
        roles[: len(idx)] = ds.step_roles[np.asarray(idx, np.int64)]
        if cf_idx is not None and len(cf_idx):  # each pair: the frame's own roles, then its swapped instruction's
            c = np.asarray(cf_idx, np.int64)
            pair = np.stack([ds.step_roles[ds.cf_image[c]], ds.cf_roles[c]], axis=1)  # [P, 2, 2]
            roles[len(samples) - 2 * len(c):] = pair.reshape(-1, 2)
    return Batch(torch.cat(planes, dim=1), torch.from_numpy(ids), torch.tensor(rows), torch.tensor(pos),
                 torch.tensor(labels), torch.tensor(is_action), torch.tensor(query_pos), torch.from_numpy(roles))


def random_shift(imgs: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``pad`` pixels (edge-replicated), DrQ-style augmentation."""
    b, _, h, w = imgs.shape
    padded = F.pad(imgs, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


# --------------------------------------------------------------------------- loss


class ActionLoss(nn.Module):
    """Cross-entropy on the supervised tokens only; the lm_head runs on those rows alone.

    With ``label_sigma > 0`` the target of an action token is not one-hot but a Gaussian over the
    neighbouring bins (HL-Gauss, Farebrother et al. 2024, "Stop Regressing"): the 256 bins are an
    ordered discretisation of one number, and a one-hot target treats a prediction one bin off as
    wrong as one 200 bins off. The soft target keeps inference unchanged (argmax of the same
    tokens) and makes a small model learn the bin geometry far faster. EOS stays one-hot.
    """

    def __init__(self, model: OpenVLA, action_ids: tuple[int, int] | None = None, label_sigma: float = 0.0,
                 attn_sup: AttentionSupervision | None = None, attn_sup_weight: float = 0.0,
                 attn_role: RoleSupervision | None = None, attn_role_weight: float = 0.0,
                 head_rows: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        # --head-rows targets: the ids of the trained lm_head rows; every other row is zero (target_head_rows).
        self.head_rows: torch.Tensor | None
        self.register_buffer("head_rows", head_rows, persistent=False)
        if head_rows is not None:
            lookup = torch.full((model.config.llm.vocab_size,), -1, dtype=torch.long)
            lookup[head_rows] = torch.arange(len(head_rows))
            self.register_buffer("row_index", lookup, persistent=False)  # vocab id -> column of the head's logits
            self.first_zero_row = int(lookup.eq(-1).nonzero()[0, 0])  # what a full argmax returns when all C are < 0
        self.label_sigma = float(label_sigma)
        self.action_ids = action_ids  # (first action token id, one past the last)
        self.attn_sup = attn_sup  # optional training-only term (export/attn_sup.py), weighted by attn_sup_weight
        self.attn_sup_weight = float(attn_sup_weight)
        self.attn_role = attn_role  # likewise (--attn-role)
        self.attn_role_weight = float(attn_role_weight)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hidden = self.model.hidden_states(batch.pixel_values, batch.input_ids)  # [B, P + T, H]
        logp, pred, columns = self.log_probs(hidden[batch.label_rows, batch.label_pos])  # [M, V or C], [M]
        act = batch.is_action
        hard = -logp.gather(1, columns(batch.labels)[:, None])[:, 0]  # [M]
        if self.label_sigma > 0 and self.action_ids is not None:
            lo, hi = self.action_ids
            ids = torch.arange(lo, hi, device=logp.device, dtype=torch.float32)  # [A]
            # EOS rows get a dummy centre inside the action range (their soft term is discarded below;
            # an all-zero target there would put NaN into the gradient through torch.where).
            centre = batch.labels.clamp(lo, hi - 1).float()
            target = torch.exp(-0.5 * ((ids[None] - centre[:, None]) / self.label_sigma) ** 2)  # [M, A]
            target = target / target.sum(-1, keepdim=True)
            action_cols = columns(torch.arange(lo, hi, device=logp.device))  # [A]
            soft = -(target * logp[:, action_cols]).sum(-1)  # [M]
            loss = torch.where(act, soft, hard).mean()
        else:
            loss = hard.mean()
        with torch.no_grad():
            acc = (pred[act] == batch.labels[act]).float().mean()
            # Bin distance of predicted vs target action tokens (non-action predictions count as 255).
            dist = (pred[act] - batch.labels[act]).abs().clamp(max=255).float().mean()
        stats = {"losses/action_ce": loss.detach(), "metrics/action_accuracy": acc, "metrics/token_bin_error": dist}
        if self.attn_sup is not None:
            sup = self.attn_sup(batch.pixel_values, batch.input_ids)
            stats["losses/attn_sup"] = sup.detach()
            loss = loss + self.attn_sup_weight * sup
        if self.attn_role is not None:
            role = self.attn_role(batch.pixel_values, batch.query_pos, batch.roles)
            stats["losses/attn_role"] = role.detach()
            loss = loss + self.attn_role_weight * role
        return loss, stats

    def log_probs(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Full-vocabulary log-probabilities of the supervised rows ``h`` [M, H] -> (log p [M, V or C], the
        greedy token over the whole vocabulary [M], vocab id -> column of log p).

        With head rows, only their C logits are computed. Every other row of the head is zero, so its logit
        is exactly 0 and the V - C of them add one term, log(V - C), to the normaliser: log p is exact.
        """
        lm_head = self.model.language_model.lm_head
        if self.head_rows is None:
            logits = lm_head(h).float()  # [M, V]
            return F.log_softmax(logits, dim=-1), logits.argmax(-1).detach(), lambda ids: ids
        logits = F.linear(h, lm_head.weight[self.head_rows]).float()  # [M, C]
        rest = torch.full_like(logits[:, :1], math.log(lm_head.weight.shape[0] - len(self.head_rows)))
        logp = logits - torch.logsumexp(torch.cat([logits, rest], dim=-1), dim=-1, keepdim=True)
        with torch.no_grad():
            best, col = logits.max(-1)
            # argmax over the whole vocabulary: a head row when its logit beats the zeros, else the first zero row
            pred = torch.where(best > 0, self.head_rows[col], self.first_zero_row)
        return logp, pred, lambda ids: self.row_index[ids]


def target_head_rows(model: OpenVLA, action_ids: tuple[int, int], eos_id: int, source: str | None) -> torch.Tensor:
    """--head-rows targets: the ids of the head rows kept (the action rows, then EOS). From scratch
    (``source`` None) the other rows are zeroed; a model loaded from ``source`` must have them zero already."""
    lo, hi = action_ids
    rows = torch.cat([torch.arange(lo, hi), torch.tensor([eos_id])])
    weight = model.language_model.lm_head.weight
    others = torch.ones(weight.shape[0], dtype=torch.bool)
    others[rows] = False
    if source is None:
        with torch.no_grad():
            weight[others] = 0.0
    elif (nonzero := int(weight[others].abs().sum(-1).gt(0).sum())):
        raise ConfigError(f"--head-rows targets: {source} has {nonzero} non-zero lm_head rows besides the {len(rows)} "
                          "target rows (it was not trained with --head-rows targets), so their logits are not 0 and "
                          "the exact softmax over the target rows does not hold. Fine-tune it with --head-rows all, or "
                          "train from scratch with --head-rows targets")
    return rows


# --------------------------------------------------------------------------- training loop


class WeightAverage:
    """An exponential moving average of a model's floating-point weights (Polyak averaging).

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after n updates, so the first steps
    (far from anything worth averaging) are soon forgotten. It only reads the model: the training
    run, and its ``final/`` checkpoint, are bit-identical with or without it.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        keep = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v.detach(), 1.0 - keep)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}

    def averaged_model(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` holding the averaged weights."""
        avg = copy.deepcopy(model)
        avg.load_state_dict(self.shadow)
        return avg


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine decay to min_lr_ratio at the last step."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def ground_share(step: int, cfg: TrainConfig) -> float:
    """Fraction of the batch at ``step`` spent on grounding questions: --ground-start moving linearly to
    --ground-frac over --ground-decay-steps, then --ground-frac."""
    if cfg.ground_start is None:
        return cfg.ground_frac
    t = min(1.0, step / cfg.ground_decay_steps)
    return cfg.ground_start + (cfg.ground_frac - cfg.ground_start) * t


def query_weights(ds: ActionDataset, pair_weight: float, turn_weight: float = 1.0) -> torch.Tensor | None:
    """Sampling weights of the grounding questions (None = uniform): `pair_weight` for those about scenes of two or
    more objects, times `turn_weight` for the orientation ones."""
    if (pair_weight == 1.0 and turn_weight == 1.0) or not len(ds.query_image):
        return None
    return torch.from_numpy(np.where(ds.query_pair, pair_weight, 1.0) * np.where(ds.query_turn, turn_weight, 1.0))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "embed_tokens" in name or "norm" in name or name.endswith(("pos_embed", "cls_token", "reg_token")):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size())


def resolve_device(name: str, dist_info: DistInfo) -> str:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda but torch sees no CUDA GPU; use --device cpu")
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', dist_info.rank))}"
    return name


def begin_run(threads: int, device_name: str, out_dir: str, state_file: str) -> tuple[DistInfo, str, Path, Path, bool]:
    """What every training job does first: CPU threads, the process group (under torchrun), the
    device, the output folder; returns (dist_info, device, out, state_path, resume)."""
    if threads:
        torch.set_num_threads(threads)
    dist_info = init_distributed("cuda" if device_name in ("cuda", "auto") and torch.cuda.is_available() else "cpu")
    device = resolve_device(device_name, dist_info)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state" / state_file
    return dist_info, device, out, state_path, state_path.is_file()


def train(cfg: TrainConfig) -> Path | None:
    """Run (or resume) a training job; returns the final checkpoint directory, or None when
    ``stop_after`` ended this run early (its state is saved; run again to continue)."""
    dist_info, device, out, state_path, resume = begin_run(cfg.threads, cfg.device, cfg.out, STATE_FILE)
    if resume:
        _check_resume_config(out, cfg)

    tok_dir = out / "tokenizer"
    if cfg.init:
        model, info = load_model(cfg.init, require_norm_stats=False, device="cpu")
        config, init_stats = info.config, info.config.norm_stats
        if dist_info.main and not tok_dir.exists():
            tok_dir.mkdir()
            copy_tokenizer(cfg.init, tok_dir)
    else:
        config = preset_config(get_preset(cfg.preset), norm_stats={})
        init_stats = None
        model = OpenVLA(config)
        init_weights(model, seed=cfg.seed, sincos_pos=cfg.pos_init == "sincos")
        if dist_info.main and not tok_dir.exists():
            write_tokenizer(tok_dir, model_max_length=config.llm.max_position_embeddings)
    _barrier(dist_info)

    transform = ImageTransform.from_config(config)
    tokenizer = PromptTokenizer.from_dir(tok_dir)
    action_tok = ActionTokenizer(vocab_size=config.token_vocab_size, n_bins=config.n_action_bins)
    t0 = time.perf_counter()
    ds = load_dataset(cfg.data_files, transform, tokenizer, action_tok, cfg.dataset_key, init_stats,
                      grounding=cfg.ground_frac > 0, task_queries=cfg.ground_task, roles=cfg.attn_role > 0,
                      counterfactuals=cfg.counterfactual_frac > 0, orientation=cfg.ground_orient,
                      orient_kinds=cfg.orient_kinds)
    log.info("loaded %d steps, %d instructions from %s in %.1fs", len(ds), len(ds.instructions), cfg.data, time.perf_counter() - t0)
    if cfg.counterfactual_frac > 0:
        log.info("%d counterfactual samples", len(ds.cf_image))
    n_pairs = int(round(cfg.batch_size * cfg.counterfactual_frac / 2))
    cf_weights = torch.from_numpy(ds.cf_weight) if n_pairs else None
    config = config.replace(norm_stats=ds.norm_stats)
    model.config = config

    model.to(device).train()
    model.freeze_unused()
    attn_sup = (AttentionSupervision(model, transform, tokenizer, cfg.attn_sup_layer, cfg.attn_sup_head).to(device)
                if cfg.attn_sup > 0 else None)
    attn_role = (RoleSupervision(model, transform, cfg.attn_role_layer, tokens=cfg.attn_role_tokens).to(device)
                 if cfg.attn_role > 0 else None)
    action_ids = (action_tok.first_action_token, action_tok.vocab_size)
    head_rows = (target_head_rows(model, action_ids, config.llm.eos_token_id, cfg.init)
                 if cfg.head_rows == "targets" else None)
    loss_fn: nn.Module = ActionLoss(model, action_ids, cfg.label_sigma, attn_sup, cfg.attn_sup, attn_role,
                                    cfg.attn_role, head_rows).to(device)
    if dist_info.world > 1:
        loss_fn = nn.parallel.DistributedDataParallel(loss_fn, device_ids=[device] if device.startswith("cuda") else None)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    q_weights = query_weights(ds, cfg.ground_pair_weight, cfg.ground_orient_weight)
    step = 0
    ema = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    if resume:
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        step = int(state["step"])
        log.info("resumed from %s at step %d", state_path, step)
    if dist_info.main:
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    autocast = torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16,
                              enabled=cfg.precision == "bf16")
    bar = progress_bar(cfg.steps, step, "train", "step", cfg.progress and dist_info.main)
    metrics_file = (out / "metrics.jsonl").open("a") if dist_info.main else None
    window: dict[str, list[float]] = {}
    last_log = time.perf_counter()
    samples_since = 0
    start_step = step
    try:
        while step < cfg.steps:
            if cfg.stop_after and step - start_step >= cfg.stop_after:
                break
            opt.zero_grad(set_to_none=True)
            for micro in range(cfg.grad_accum):
                gen = torch.Generator().manual_seed(hash((cfg.seed, step, micro, dist_info.rank)) % (2**63))
                n_query = int(round(cfg.batch_size * ground_share(step, cfg)))
                idx = torch.randint(0, len(ds), (cfg.batch_size - n_query - 2 * n_pairs,), generator=gen).numpy()
                qidx = None
                if n_query:
                    qidx = (torch.randint(0, len(ds.query_image), (n_query,), generator=gen) if q_weights is None
                            else torch.multinomial(q_weights, n_query, replacement=True, generator=gen)).numpy()
                cidx = (torch.multinomial(cf_weights, n_pairs, replacement=True, generator=gen).numpy()
                        if cf_weights is not None else None)
                batch = make_batch(ds, idx, transform, config.num_patches, config.llm.pad_token_id or 0,
                                   config.llm.eos_token_id, gen, cfg.shift if cfg.augment else 0, qidx,
                                   cidx).to(device)
                sync = micro == cfg.grad_accum - 1 or dist_info.world == 1
                ctx = loss_fn.no_sync() if not sync else _nullcontext()
                with ctx, autocast:
                    loss, stats = loss_fn(batch)
                    (loss / cfg.grad_accum).backward()
                for k, v in stats.items():
                    window.setdefault(k, []).append(float(v))
                samples_since += cfg.batch_size * dist_info.world
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
            step += 1
            window.setdefault("losses/grad_norm", []).append(float(grad_norm))
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                row = {k: float(np.mean(v)) for k, v in window.items()}
                row.update({"step": step, "charts/lr": sched.get_last_lr()[0],
                            "charts/samples_per_s": samples_since / max(now - last_log, 1e-9)})
                window, last_log, samples_since = {}, now, 0
                if metrics_file:
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                bar.set_postfix(loss=f"{row['losses/action_ce']:.3f}", acc=f"{row['metrics/action_accuracy']:.2f}")
            stopping = bool(cfg.stop_after) and step - start_step >= cfg.stop_after
            if dist_info.main and (step % cfg.save_every == 0 or step == cfg.steps or stopping):
                _save_state(state_path, model, opt, sched, step, ema)
                _save_periodic(out, model, config, tok_dir, step, cfg.keep_checkpoints)
    finally:
        bar.close()
        if metrics_file:
            metrics_file.close()
    if step < cfg.steps:
        log.info("stopped at step %d of %d; run the same command again to resume", step, cfg.steps)
        _barrier(dist_info)
        return None
    final = out / "final"
    if dist_info.main:
        save_checkpoint(model, final, tokenizer_dir=tok_dir, config=config, overwrite=True)
        log.info("final checkpoint: %s", final)
        if ema is not None:
            save_checkpoint(ema.averaged_model(model), out / "final_ema", tokenizer_dir=tok_dir, config=config,
                            overwrite=True)
            log.info("weight-averaged checkpoint (--ema %g): %s", cfg.ema, out / "final_ema")
    _barrier(dist_info)
    return final


def _check_resume_config(out: Path, cfg: TrainConfig) -> None:
    """A resumed run must be the same job (steps may grow); otherwise name what differs."""
    saved_path = out / "train_config.json"
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text())
    allowed = {"steps", "save_every", "log_every", "progress", "threads", "keep_checkpoints", "stop_after"}
    defaults = asdict(TrainConfig(data="x", out=cfg.out))  # options newer than the saved run take their default
    diff = {k: (saved.get(k, defaults[k]), v) for k, v in asdict(cfg).items()
            if k not in allowed and saved.get(k, defaults[k]) != v}
    if diff:
        details = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"{out} holds a run with other settings ({details}); use another --out or the same flags")


def _save_state(path: Path, model: OpenVLA, opt: torch.optim.Optimizer, sched: Any, step: int,
                ema: WeightAverage | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step}
    if ema is not None:
        state["ema"] = ema.state_dict()
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a crash mid-save leaves the previous state intact


def _save_periodic(out: Path, model: OpenVLA, config: VLAConfig, tok_dir: Path, step: int, keep: int) -> None:
    ckpt_dir = out / "checkpoints"
    save_checkpoint(model, ckpt_dir / f"step_{step:07d}", tokenizer_dir=tok_dir, config=config, overwrite=True)
    old = sorted(ckpt_dir.glob("step_*"))[:-keep]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)


def _barrier(dist_info: DistInfo) -> None:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def progress_bar(total: int, start: int, desc: str, unit: str, enabled: bool):
    """The trainers' tqdm bar (shown on the main process only, resumed runs start at ``start``)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)


def main(argv: list[str] | None = None) -> int:
    def run(cfg: TrainConfig) -> str:
        final = train(cfg)
        return f"final checkpoint: {final}" if final else "stopped early (--stop-after); run again to resume"

    return run_command("rlrc-train", __doc__, TrainConfig, run, argv, logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
