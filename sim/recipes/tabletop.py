"""The built-in benchmark's co-training recipe: what the base policy is trained with besides its demos.

``rlrc-sim train`` (sim/cli.py) is ``rlrc-train`` (export/train/sft.py) plus this recipe, plugged in through the
trainer's ``Recipe`` interface. Its terms need what only the simulator knows, which is why they
live here and not in the product trainer:

- **grounding questions** (``--ground-frac``; recipes/grounding.py): a share of every batch is
  questions about demonstration frames, answered with four action tokens: "where is the red
  block?", with ``--ground-task`` "where is the object to move to <instruction>?", and with
  ``--ground-orient`` "how is the red bar turned?" (asked ``--ground-orient-weight`` times as often
  as a "where" question);
- **counterfactual pairs** (``--counterfactual-frac``; recipes/counterfactual.py): an untouched stack
  or push frame with its own instruction and action, and again with the instruction's words swapped
  and the expert's action for that;
- **role attention** (``--attn-role``; recipes/attention.py): at the positions predicting the first
  ``--attn-role-tokens`` action tokens, one head of decoder layer 1 is pulled towards the patches of
  the object the instruction moves and another towards its goal object.

Inference never sees any of this: checkpoints are plain OpenVLA checkpoints.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from export.demos import Demo, DemoReader
from export.model import OpenVLA
from export.train.data import IGNORE, Batch, DemoSteps, Sample
from rlrc_runtime.action import action_stats
from rlrc_runtime.errors import ConfigError, DatasetError
from rlrc_runtime.transforms import Transforms

log = logging.getLogger(__name__)

ROLE_LAYER = 1
"""Decoder layer whose heads the role-attention term supervises (layer 0 still mixes words and patches)."""


@dataclass(frozen=True)
class TabletopRecipeConfig:
    ground_frac: float = field(default=0.0, metadata={"help": "fraction of each batch spent on grounding questions "
                                                              "about demonstration frames (recipes/grounding.py); 0 = off"})
    ground_task: bool = field(default=False, metadata={"help": "with --ground-frac: also ask where the object the "
                                                               "instruction moves is"})
    ground_orient: bool = field(default=False, metadata={"help": "with --ground-frac: also ask how each bar is turned"})
    ground_orient_weight: float = field(default=1.0, metadata={"help": "with --ground-orient: sampling weight of an "
                                                                       "orientation question against 1 for a 'where' "
                                                                       "one"})
    counterfactual_frac: float = field(default=0.0, metadata={"help": "fraction of each batch spent on counterfactual "
                                                                      "pairs (two rows each; stack and push demos); "
                                                                      "0 = off"})
    attn_role: float = field(default=0.0, metadata={"help": "weight of the role-attention term "
                                                            "(recipes/attention.py); 0 = off"})
    attn_role_tokens: int = field(default=1, metadata={"help": "--attn-role supervises the positions predicting the "
                                                               "first N action tokens"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.ground_frac < 1.0:
            raise ConfigError(f"--ground-frac={self.ground_frac} must be in [0, 1)")
        if (self.ground_task or self.ground_orient) and self.ground_frac == 0:
            raise ConfigError("--ground-task and --ground-orient add questions to the grounding share of each batch; "
                              "pass --ground-frac too (e.g. 0.2)")
        if self.ground_orient_weight <= 0 or (self.ground_orient_weight != 1.0 and not self.ground_orient):
            raise ConfigError(f"--ground-orient-weight={self.ground_orient_weight} must be > 0 and weighs the "
                              "orientation questions: pass --ground-orient too (1 = uniform)")
        if not 0.0 <= self.counterfactual_frac < 1.0 or self.ground_frac + self.counterfactual_frac >= 1.0:
            raise ConfigError(f"--counterfactual-frac={self.counterfactual_frac} must be in [0, 1) and leave room for "
                              f"demonstration rows beside --ground-frac={self.ground_frac} (their sum < 1)")
        if self.attn_role < 0:
            raise ConfigError(f"--attn-role={self.attn_role} must be >= 0 (0 = off)")
        if not 1 <= self.attn_role_tokens <= 7:
            raise ConfigError(f"--attn-role-tokens={self.attn_role_tokens} must be in [1, 7] (the action's tokens, "
                              "from the first)")


class TabletopRecipe:
    """The recipe's samples and loss terms (export.train.sft.Recipe)."""

    def __init__(self, config: TabletopRecipeConfig) -> None:
        self.config = config
        c = config
        # Collected per demo while the data loads (rows index DemoSteps.images).
        self.q_image: list[int] = []
        self.q_prompt: list[int] = []
        self.q_answer: list[np.ndarray] = []
        self.q_turn: list[bool] = []
        self.q_names: dict[tuple[str, str], int] = {}
        self.step_roles: list[np.ndarray] = []
        self.cf_image: list[int] = []
        self.cf_instruction: list[str] = []
        self.cf_action: list[np.ndarray] = []
        self.cf_family: list[str] = []
        self.cf_roles: list[np.ndarray] = []
        self.grounding, self.roles, self.counterfactuals = c.ground_frac > 0, c.attn_role > 0, c.counterfactual_frac > 0
        self.role_sup: Any = None
        self._n = (0, 0)

    # ------------------------------------------------------------------ loading

    def read_demo(self, reader: DemoReader, demo: Demo, first_row: int) -> None:
        info = reader.episode_info(demo.key)
        if self.grounding:
            self._add_queries(info, demo, first_row)
        demo_roles = _roles(info, demo) if self.roles else None
        if demo_roles is not None:
            self.step_roles.append(np.tile(demo_roles, (len(demo), 1)))
        if self.counterfactuals and info is not None and demo.proprio is not None:
            from sim.recipes.counterfactual import demo_counterfactuals

            family, split, seed, _ = info
            for cf in demo_counterfactuals(family, split, seed, demo.instruction, demo.proprio):
                self.cf_image.append(first_row + cf.frame)
                self.cf_instruction.append(cf.instruction)
                self.cf_action.append(cf.action)
                self.cf_family.append(family)
                if demo_roles is not None:
                    # A swapped stack instruction moves the other block onto this one; a swapped push
                    # instruction moves the same block to another side.
                    self.cf_roles.append(demo_roles[::-1] if family == "stack" else demo_roles)

    def _add_queries(self, info: tuple[str, str, int, np.ndarray] | None, demo: Demo, first_row: int) -> None:
        from sim.recipes.grounding import demo_queries

        if info is None:
            return
        family, split, seed, ee_pos = info
        # Our demos' proprio is [x, y, z, roll, pitch, yaw, gripper] (sim.env).
        hand_yaw = demo.proprio[:, 5] if self.config.ground_orient and demo.proprio is not None else None
        for q in demo_queries(family, split, seed, demo.instruction, ee_pos, self.config.ground_task, hand_yaw,
                              ("bar",)):
            self.q_image.append(first_row + q.frame)
            self.q_prompt.append(self.q_names.setdefault((q.template, q.name), len(self.q_names)))
            self.q_answer.append(q.answer)
            self.q_turn.append(q.question == "turn")

    def prepare(self, model: OpenVLA, data: DemoSteps, transforms: Transforms) -> None:
        """Tokenize what was collected, check each term has data, build the attention term on ``model``."""
        c, where = self.config, "demo files written by `rlrc-sim demos` (episode seeds, hand poses and proprio)"
        self.data = data
        if self.grounding and not self.q_image:
            raise DatasetError(f"--ground-frac needs {where}; the data gave no grounding question. Use --ground-frac 0")
        if self.roles and not (np.concatenate(self.step_roles) >= 0).any():
            raise DatasetError(f"--attn-role needs {where}; the data gave no step with a known target colour. "
                               "Use --attn-role 0")
        if self.counterfactuals and not self.cf_image:
            raise DatasetError(f"--counterfactual-frac needs stack or push demos of the id split, {where}; the data "
                               "gave none. Use --counterfactual-frac 0")
        self.query_tokens = transforms.action.encode(np.asarray(self.q_answer).reshape(-1, 4)).astype(np.int64)
        self.query_prompts = [dataclasses.replace(transforms.prompt, template=template)(name)
                              for template, name in self.q_names]
        self.query_weights = (torch.from_numpy(np.where(np.asarray(self.q_turn, bool), c.ground_orient_weight, 1.0))
                              if c.ground_orient_weight != 1.0 and self.q_image else None)
        if self.counterfactuals:
            stats = action_stats(data.norm_stats, data.dataset_key)
            actions = np.asarray(self.cf_action).reshape(-1, stats.action_dim)
            self.cf_tokens = transforms.encode_actions(actions, stats)
            if data.tokens.shape[1] > stats.action_dim:  # action chunks: only the swapped task's first action is known
                pad = np.full((len(self.cf_tokens), data.tokens.shape[1] - stats.action_dim), IGNORE, np.int64)
                self.cf_tokens = np.concatenate([self.cf_tokens, pad], axis=1)
            self.cf_prompts = [transforms.prompt(t) for t in self.cf_instruction]
            # Each family gets an equal share of the pairs.
            _, family_of, family_size = np.unique(np.asarray(self.cf_family, dtype=str), return_inverse=True,
                                                  return_counts=True)
            self.cf_weights = torch.from_numpy(1.0 / family_size[family_of].astype(np.float64))
            log.info("%d counterfactual samples", len(self.cf_image))
        if self.roles:
            from sim.recipes.attention import RoleSupervision

            self.step_roles_all = np.concatenate(self.step_roles)
            self.cf_roles_all = np.asarray(self.cf_roles, np.int64).reshape(-1, 2)
            self.role_sup = RoleSupervision(model, transforms.image, ROLE_LAYER,
                                            tokens=c.attn_role_tokens).to(model.device)

    # ------------------------------------------------------------------ batches

    def _counts(self, batch_size: int) -> tuple[int, int]:
        """(grounding rows, counterfactual pairs) of a batch."""
        return int(round(batch_size * self.config.ground_frac)), int(round(batch_size * self.config.counterfactual_frac / 2))

    def rows(self, batch_size: int) -> int:
        n_query, n_pairs = self._n = self._counts(batch_size)
        if self.counterfactuals and n_pairs == 0:
            raise ConfigError(f"--counterfactual-frac={self.config.counterfactual_frac} gives no pair in a batch of "
                              f"{batch_size} (each pair is two rows); use at least {2.0 / batch_size:.3g}")
        return n_query + 2 * n_pairs

    def samples(self, demo_rows: np.ndarray, gen: torch.Generator) -> tuple[list[Sample], dict[str, np.ndarray]]:
        """Grounding rows, then counterfactual pairs, drawn from ``gen`` in that order; per-row roles."""
        n_query, n_pairs = self._n  # set by rows() for this batch
        out: list[Sample] = []
        if n_query:
            q = (torch.randint(0, len(self.q_image), (n_query,), generator=gen) if self.query_weights is None
                 else torch.multinomial(self.query_weights, n_query, replacement=True, generator=gen)).numpy()
            out += [(self.q_image[i], self.query_prompts[self.q_prompt[i]], self.query_tokens[i]) for i in q]
        pairs = np.zeros(0, np.int64)
        if n_pairs:
            pairs = torch.multinomial(self.cf_weights, n_pairs, replacement=True, generator=gen).numpy()
            for c in pairs:
                row = self.cf_image[c]
                out += [self.data.sample(row), (row, self.cf_prompts[c], self.cf_tokens[c])]
        if not self.roles:
            return out, {}
        roles = np.full((len(demo_rows) + len(out), 2), -1, np.int64)  # grounding questions have no roles
        roles[: len(demo_rows)] = self.step_roles_all[demo_rows]
        if len(pairs):  # each pair: the frame's own roles, then its swapped instruction's
            frame_roles = self.step_roles_all[np.asarray(self.cf_image, np.int64)[pairs]]
            roles[len(roles) - 2 * len(pairs):] = np.stack([frame_roles, self.cf_roles_all[pairs]], axis=1).reshape(-1, 2)
        return out, {"roles": roles}

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.role_sup is None:
            return batch.pixel_values.new_zeros(()), {}
        role = self.role_sup(batch.pixel_values, batch.first_target_pos, batch.extras["roles"])
        return self.config.attn_role * role, {"losses/attn_role": role.detach()}


def _roles(info: tuple[str, str, int, np.ndarray] | None, demo: Demo) -> np.ndarray:
    """[2] palette indices of the demo's target and goal colours (-1 = none, ambiguous or unknown)."""
    from sim.recipes.grounding import episode_roles
    from sim.tasks import COLOURS

    if info is None:
        return np.full(2, -1, np.int64)
    family, split, seed, _ = info
    palette = list(COLOURS)
    return np.asarray([palette.index(c) if c is not None else -1
                       for c in episode_roles(family, split, seed, demo.instruction)], np.int64)
