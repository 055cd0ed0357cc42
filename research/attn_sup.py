"""Attention supervision of colour words, a training term of the research probes (docs/experiments/log.md).

One decoder head's attention from every colour word of a prompt is pulled towards the patches of
that colour (the first hop of binding a word to an object). The base-policy recipe does not use it;
``python -m research.fit binding|grounding --attn-sup W`` does.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from export.model import OpenVLA
from rlrc_runtime.errors import ConfigError
from rlrc_runtime.preprocess import ImageTransform
from rlrc_runtime.prompt import PromptTokenizer
from sim.recipes.attention import LayerProbe
from sim.tasks import COLOURS


def colour_word_ids(tokenizer: PromptTokenizer, colours: Mapping[str, Any]) -> torch.Tensor:
    """Token id of each colour word as it appears inside a prompt; each must be one token."""
    ids = []
    for name in colours:
        context = tokenizer.encode_fn("the")
        with_word = tokenizer.encode_fn(f"the {name}")
        if len(with_word) != len(context) + 1 or with_word[: len(context)] != context:
            raise ConfigError(f"--attn-sup needs each colour word to be one token, but {name!r} encodes as "
                              f"{with_word[len(context):]}; use a tokenizer from export.tokenizer_gen (or drop "
                              "--attn-sup)")
        ids.append(with_word[-1])
    return torch.tensor(ids, dtype=torch.int64)


class AttentionSupervision(LayerProbe):
    """``loss = sup(pixel_values, input_ids)`` after the model's forward on the batch: every colour word's
    attention (one head of one layer) pulled towards the patches of its colour (``--attn-sup``)."""

    def __init__(self, model: OpenVLA, transform: ImageTransform, tokenizer: PromptTokenizer, layer: int = 0,
                 head: int = 0, colours: Mapping[str, tuple[float, float, float]] = COLOURS) -> None:
        super().__init__(model, transform, layer, (head,), colours, "--attn-sup")
        self.head = head
        self.register_buffer("word_ids", colour_word_ids(tokenizer, colours), persistent=False)

    def word_attention(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows [M], text columns [M], log-attention [M, P + T]) of the supervised head from the M colour
        words of the batch."""
        rows, cols = torch.isin(input_ids, self.word_ids).nonzero(as_tuple=True)
        pos = self.num_patches + cols  # sequence [BOS, patches, text[1:]]: text j >= 1 sits at P + j
        return rows, cols, self.attention(rows, pos, self.head)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        rows, cols, logp = self.word_attention(input_ids)
        if len(rows) == 0:
            return self.zero()  # no colour word in this batch
        colour = (input_ids[rows, cols][:, None] == self.word_ids[None]).float().argmax(-1)  # [M]
        loss = self.patch_cross_entropy(logp, self.colour_targets(pixel_values)[rows, :, colour])
        return self.zero() if loss is None else loss
