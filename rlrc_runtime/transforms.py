"""The input/output transforms of one policy, built once and shared by everything that runs it.

``Policy`` (the robot), the SFT batch builder and the PPO rollout all turn frames, instructions
and actions into model inputs and targets through one ``Transforms`` object, so training sees
exactly what the runtime feeds the networks:

- frames: ``image.resize`` (PIL bicubic to the towers' size), then ``pixel_values`` (float32
  [0, 1], per-tower normalisation) on one frame or a batch;
- instructions: ``prompt`` (the OpenVLA prompt, token ids ``BOS ... 29871``);
- actions: ``encode_actions`` (robot units -> [-1, 1] with a dataset's q01/q99 -> token ids) and
  ``decode_actions`` (the reverse, the runtime's output path).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlrc_runtime.action import ActionStats, ActionTokenizer
from rlrc_runtime.checkpoint import image_stats
from rlrc_runtime.config import VLAConfig
from rlrc_runtime.preprocess import ImageTransform
from rlrc_runtime.prompt import PromptTokenizer


@dataclass(frozen=True)
class Transforms:
    """Frame, instruction and action transforms of one model."""

    image: ImageTransform
    """Frame -> pixel_values (resize + normalisation)."""
    prompt: PromptTokenizer
    """Instruction -> prompt token ids."""
    action: ActionTokenizer
    """Normalised actions <-> action token ids."""

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: VLAConfig) -> "Transforms":
        """The transforms of a checkpoint directory: image statistics as its processor applies them
        (``preprocessor_config.json`` when present), its tokenizer, the config's action bins."""
        means, stds = image_stats(path, config)
        return cls(ImageTransform(image_size=config.image_size, means=means, stds=stds),
                   PromptTokenizer.from_dir(path), action_tokenizer(config))

    @classmethod
    def for_new_model(cls, config: VLAConfig, tokenizer_dir: str | Path) -> "Transforms":
        """The transforms of a model built from ``config`` (no checkpoint yet): the towers' own
        image statistics and the tokenizer written to ``tokenizer_dir``."""
        return cls(ImageTransform.from_config(config), PromptTokenizer.from_dir(tokenizer_dir),
                   action_tokenizer(config))

    def pixel_values(self, frames: np.ndarray) -> np.ndarray:
        """Resized frames [B, S, S, 3] uint8 -> pixel_values [B, 3 * n_towers, S, S] float32."""
        return self.image.normalize(frames)

    def encode_actions(self, actions: np.ndarray, stats: ActionStats) -> np.ndarray:
        """Actions in robot units [..., D] -> action token ids [..., D] int64."""
        return self.action.encode(stats.normalize(actions)).astype(np.int64)

    def decode_actions(self, tokens: np.ndarray, stats: ActionStats) -> np.ndarray:
        """Action token ids [..., D] -> actions in robot units [..., D] float32."""
        return stats.unnormalize(self.action.decode(tokens)).astype(np.float32)


def action_tokenizer(config: VLAConfig) -> ActionTokenizer:
    """The action-token map of a model (OpenVLA: the top 256 ids of the 32000-token vocabulary)."""
    return ActionTokenizer(vocab_size=config.token_vocab_size, n_bins=config.n_action_bins)
