"""Attention supervision for ``rlrc-train --attn-sup``: teach one LLM head where a colour word points.

To act on "stack the red block on the green block" the decoder must bind each colour word to the
object of that colour. That takes two hops inside it: the word's position finds the patches of its
colour, then the action positions read that. A from-scratch model learns the first hop slowly: on
stack scenes alone its grounding answers follow the colour words only after ~1000 steps of nothing
but questions (benchmarks/results/grounding_bench.md), and the 70 % base policy (attempt 9) never
learnt it (its answers are nearer the named block in 0.51 of scenes: binding_probe_attempt9.json).

This loss teaches the first hop directly. For every colour word of every prompt in the batch
(instructions and grounding questions alike), one head of one decoder layer is pulled towards the
patches that show that colour: cross-entropy between the head's attention over the patch positions
and the per-patch share of pixels of that colour in the image as fed (palette match on tower 0's
un-normalised pixels, after augmentation). The head's attention is recomputed from the layer's own
input, captured by a forward pre-hook, with the same projections, rotary embedding and causal mask
as the forward pass. Training only: the model, its checkpoints and inference are unchanged.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from export.model import OpenVLA, rotate_half
from rlrc_runtime.errors import ConfigError
from rlrc_runtime.preprocess import ImageTransform
from rlrc_runtime.prompt import PromptTokenizer
from sim.tasks import COLOURS

# A pixel counts as coloured when it is saturated and bright enough; grey table, black gripper and
# white walls do not (HSV-style: saturation = (max - min) / max, value = max).
MIN_SATURATION = 0.45
MIN_VALUE = 0.25


def colour_fractions(rgb: torch.Tensor, palette: torch.Tensor, patch: int) -> torch.Tensor:
    """Share of each patch's pixels nearest each palette colour.

    rgb [B, 3, S, S] in [0, 1]; palette [C, 3] in [0, 1] -> [B, P, C] with P = (S / patch)^2 in
    row-major patch order (the towers' order). Pixels are matched on chromaticity (rgb / max), so
    a shaded face of a red block is still red; unsaturated or dark pixels match nothing.
    """
    value = rgb.amax(1, keepdim=True)  # [B, 1, S, S]
    saturation = (value - rgb.amin(1, keepdim=True)) / value.clamp_min(1e-6)
    chroma = rgb / value.clamp_min(1e-6)  # [B, 3, S, S]
    ref = palette / palette.amax(1, keepdim=True)  # [C, 3]
    dist = ((chroma[:, None] - ref[None, :, :, None, None]) ** 2).sum(2)  # [B, C, S, S]
    nearest = F.one_hot(dist.argmin(1), len(palette)).permute(0, 3, 1, 2).to(rgb.dtype)  # [B, C, S, S]
    nearest = nearest * ((saturation > MIN_SATURATION) & (value > MIN_VALUE)).to(rgb.dtype)
    return F.avg_pool2d(nearest, patch).flatten(2).transpose(1, 2)  # [B, P, C]


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


class AttentionSupervision(nn.Module):
    """``loss = sup(batch)`` after the model's forward on ``batch``: the attention-supervision term.

    The hook keeps a reference to the layer input of the most recent full-sequence forward pass;
    call this right after that forward (``ActionLoss`` does) and before the next one.
    """

    def __init__(self, model: OpenVLA, transform: ImageTransform, tokenizer: PromptTokenizer, layer: int = 0,
                 head: int = 0, colours: Mapping[str, tuple[float, float, float]] = COLOURS) -> None:
        super().__init__()
        llm = model.config.llm
        if not 0 <= layer < llm.num_layers:
            raise ConfigError(f"--attn-sup-layer={layer} is not a decoder layer (the model has {llm.num_layers})")
        heads = llm.num_attention_heads[layer]
        if not 0 <= head < heads:
            raise ConfigError(f"--attn-sup-head={head} is not a head of layer {layer} (it has {heads})")
        self.attn = model.language_model.model.layers[layer].self_attn
        self.head = head
        self.kv_head = head // (heads // self.attn.num_kv_heads)  # as the forward's repeat_interleave
        self.num_patches = model.config.num_patches
        self.patch = model.config.towers[0].patch_size
        self.register_buffer("word_ids", colour_word_ids(tokenizer, colours), persistent=False)
        self.register_buffer("palette", torch.tensor(list(colours.values()), dtype=torch.float32), persistent=False)
        self.register_buffer("mean", torch.tensor(transform.means[0], dtype=torch.float32)[:, None, None],
                             persistent=False)
        self.register_buffer("std", torch.tensor(transform.stds[0], dtype=torch.float32)[:, None, None],
                             persistent=False)
        self._seen: dict[str, torch.Tensor] = {}
        self._hook = self.attn.register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x, cos, sin, start, cache = args
        if start == 0 and cache is None:  # a training / scoring forward, not incremental decoding
            self._seen = {"x": x, "cos": cos[0, 0], "sin": sin[0, 0]}

    def remove(self) -> None:
        self._hook.remove()

    def word_attention(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-attention of the supervised head from every colour word over all positions.

        -> (rows [M], text columns [M], log-probabilities [M, P + T]) for the M colour words of the
        batch; positions after a word are masked (-inf), as in the causal forward.
        """
        if "x" not in self._seen:
            raise RuntimeError("AttentionSupervision needs the model's forward pass on the batch first")
        x, cos, sin = self._seen["x"], self._seen["cos"], self._seen["sin"]  # [B, L, H], [L, D]
        rows, cols = torch.isin(input_ids, self.word_ids).nonzero(as_tuple=True)
        pos = self.num_patches + cols  # sequence [BOS, patches, text[1:]]: text j >= 1 sits at P + j
        d = self.attn.head_dim
        heads, kv_heads = self.attn.num_heads, self.attn.num_kv_heads
        q = self.attn.q_proj(x[rows, pos]).view(len(rows), heads, d)[:, self.head]  # [M, D]
        q = q * cos[pos] + rotate_half(q) * sin[pos]
        k = self.attn.k_proj(x[rows]).view(len(rows), x.shape[1], kv_heads, d)[:, :, self.kv_head]  # [M, L, D]
        k = k * cos + rotate_half(k) * sin
        logits = (k @ q[:, :, None])[..., 0].float() / d**0.5  # [M, L]
        later = torch.arange(x.shape[1], device=x.device)[None] > pos[:, None]
        return rows, cols, torch.log_softmax(logits.masked_fill(later, float("-inf")), dim=-1)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        rows, cols, logp = self.word_attention(input_ids)
        zero = self._seen["x"].sum() * 0.0  # a zero loss that keeps the graph (and DDP) whole
        if len(rows) == 0:
            return zero  # no colour word in this batch
        rgb = (pixel_values[:, :3].float() * self.std + self.mean).clamp(0, 1)
        frac = colour_fractions(rgb, self.palette, self.patch)  # [B, P, C]
        colour = (input_ids[rows, cols][:, None] == self.word_ids[None]).float().argmax(-1)  # [M]
        target = frac[rows, :, colour]  # [M, P]
        visible = target.sum(-1) > 0  # a colour not in view teaches nothing
        if not visible.any():
            return zero
        target = target[visible] / target[visible].sum(-1, keepdim=True)
        patch_logp = logp[visible, 1 : self.num_patches + 1]
        return -(target * patch_logp).sum(-1).mean()
