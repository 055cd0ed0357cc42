"""Role attention for the tabletop recipe (``--attn-role``): teach the action positions where the objects are.

To act on "stack the red block on the blue block" the decoder must bind each colour word to the
object of that colour, and the positions that predict the action must find the object to move and
the object it goes onto. This term teaches the second hop directly: at the position predicting the
first action token (and the next ones with ``tokens`` > 1), one head of a decoder layer is pulled
towards the patches of the object the instruction moves and another towards its goal object, by
cross-entropy between the head's attention over the patch positions and the per-patch share of
pixels of that object's colour in the image as fed (palette match on tower 0's un-normalised
pixels, after augmentation). The head's attention is recomputed from the layer's own input,
captured by a forward pre-hook, with the same projections, rotary embedding and causal mask as the
forward pass. Training only: the model, its checkpoints and inference are unchanged.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from export.model import OpenVLA, rotate_half
from rlrc_runtime.errors import ConfigError
from rlrc_runtime.preprocess import ImageTransform
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
    # Squared distance to each palette colour, one [B, S, S] plane per colour: the same sums as a broadcast
    # over [B, C, 3, S, S], bit for bit, at ~1/25 of its time on a CPU (it was most of --attn-role's cost).
    r, g, b = chroma.unbind(1)
    dist = torch.stack([(r - c[0]) ** 2 + (g - c[1]) ** 2 + (b - c[2]) ** 2 for c in ref], 1)  # [B, C, S, S]
    nearest = F.one_hot(dist.argmin(1), len(palette)).permute(0, 3, 1, 2).to(rgb.dtype)  # [B, C, S, S]
    nearest = nearest * ((saturation > MIN_SATURATION) & (value > MIN_VALUE)).to(rgb.dtype)
    return F.avg_pool2d(nearest, patch).flatten(2).transpose(1, 2)  # [B, P, C]


class LayerProbe(nn.Module):
    """Captures one decoder layer's input during the forward pass and recomputes chosen heads' attention
    from it, plus the per-patch colour targets; the two supervision terms below are built on it.

    The hook keeps a reference to the layer input of the most recent full-sequence forward pass; call a
    term right after that forward (``ActionLoss`` does) and before the next one.
    """

    def __init__(self, model: OpenVLA, transform: ImageTransform, layer: int, heads: tuple[int, ...],
                 colours: Mapping[str, tuple[float, float, float]], flag: str) -> None:
        super().__init__()
        llm = model.config.llm
        if not 0 <= layer < llm.num_layers:
            raise ConfigError(f"{flag}-layer={layer} is not a decoder layer (the model has {llm.num_layers})")
        n_heads = llm.num_attention_heads[layer]
        for head in heads:
            if not 0 <= head < n_heads:
                raise ConfigError(f"{flag}-head={head} is not a head of layer {layer} (it has {n_heads})")
        self.attn = model.language_model.model.layers[layer].self_attn
        self.group = n_heads // self.attn.num_kv_heads  # query heads per key/value head (the forward's repeat)
        self.num_patches = model.config.num_patches
        self.patch = model.config.towers[0].patch_size
        self.register_buffer("palette", torch.tensor(list(colours.values()), dtype=torch.float32), persistent=False)
        self.register_buffer("mean", torch.tensor(transform.means[0], dtype=torch.float32)[:, None, None],
                             persistent=False)
        self.register_buffer("std", torch.tensor(transform.stds[0], dtype=torch.float32)[:, None, None],
                             persistent=False)
        self._seen: dict[str, torch.Tensor] = {}
        self._hook = self.attn.register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x, cos, sin, start, cache = args[:5]
        mask = args[5] if len(args) > 5 else None  # parallel decoding's mask, else causal
        if start == 0 and cache is None:  # a training / scoring forward, not incremental decoding
            self._seen = {"x": x, "cos": cos[0, 0], "sin": sin[0, 0], "mask": mask}

    def remove(self) -> None:
        self._hook.remove()

    def attention(self, rows: torch.Tensor, pos: torch.Tensor, head: int) -> torch.Tensor:
        """Log-attention of ``head`` from sequence position pos[m] of batch row rows[m] over all positions.

        -> [M, P + T]; positions the forward's mask hides (causal: those after pos[m]) are -inf.
        """
        if "x" not in self._seen:
            raise RuntimeError(f"{type(self).__name__} needs the model's forward pass on the batch first")
        x, cos, sin = self._seen["x"], self._seen["cos"], self._seen["sin"]  # [B, L, H], [L, D]
        d = self.attn.head_dim
        kv = head // self.group
        # Only this head's rows of the projections, and keys once per prompt (not per query).
        q = F.linear(x[rows, pos], self.attn.q_proj.weight[head * d : (head + 1) * d])  # [M, D]
        q = q * cos[pos] + rotate_half(q) * sin[pos]
        prompts, which = rows.unique(return_inverse=True)
        k = F.linear(x[prompts], self.attn.k_proj.weight[kv * d : (kv + 1) * d])  # [U, L, D]
        k = (k * cos + rotate_half(k) * sin)[which]  # [M, L, D]
        logits = (k @ q[:, :, None])[..., 0].float() / d**0.5  # [M, L]
        if self._seen.get("mask") is not None:  # the forward's own mask: [B, 1, L, L]
            hidden = ~self._seen["mask"][rows, 0, pos]
        else:
            hidden = torch.arange(x.shape[1], device=x.device)[None] > pos[:, None]
        return torch.log_softmax(logits.masked_fill(hidden, float("-inf")), dim=-1)

    def colour_targets(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, P, C] share of each patch's pixels of each palette colour, in the images as fed."""
        rgb = (pixel_values[:, :3].float() * self.std + self.mean).clamp(0, 1)
        return colour_fractions(rgb, self.palette, self.patch)

    def patch_cross_entropy(self, logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """Mean CE between target [M, P] (normalised here) and logp's patch columns; None when no row has
        any pixel of its colour (a colour not in view teaches nothing)."""
        visible = target.sum(-1) > 0
        if not visible.any():
            return None
        target = target[visible] / target[visible].sum(-1, keepdim=True)
        return -(target * logp[visible, 1 : self.num_patches + 1]).sum(-1).mean()

    def zero(self) -> torch.Tensor:
        return self._seen["x"].sum() * 0.0  # a zero loss that keeps the graph (and DDP) whole


class RoleSupervision(LayerProbe):
    """``loss = sup(pixel_values, query_pos, roles)`` after the model's forward on the batch (``--attn-role``).

    The second hop of binding: at the position that predicts the first action token (and, with
    ``tokens`` > 1, at those predicting the next ones), one head is pulled towards the patches of the
    object the instruction moves and another towards its goal object (the plate or block it goes on).
    roles [B, 2] holds those colours as palette indices, -1 where the sample has no such role (grounding
    questions, pick and push goals, a colour two objects share); query_pos [B] is each row's position
    predicting its first target token.
    """

    def __init__(self, model: OpenVLA, transform: ImageTransform, layer: int = 1,
                 heads: tuple[int, int] | None = None,
                 colours: Mapping[str, tuple[float, float, float]] = COLOURS, tokens: int = 1) -> None:
        if not 1 <= tokens <= 7:
            raise ConfigError(f"--attn-role-tokens={tokens} must be in [1, 7] (the action's tokens, from the first)")
        n_heads = model.config.llm.num_attention_heads[layer] if 0 <= layer < model.config.llm.num_layers else 1
        # Default: the target on head 0 and the goal on the first head of the other key/value group, so
        # the two searches may use different keys.
        heads = heads if heads is not None else (0, n_heads // 2 if n_heads > 1 else 0)
        super().__init__(model, transform, layer, heads, colours, "--attn-role")
        self.heads = heads
        self.tokens = tokens  # supervised positions: those predicting action tokens 1 .. tokens

    def forward(self, pixel_values: torch.Tensor, query_pos: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
        frac = None
        total, count = self.zero(), 0
        for role, head in enumerate(self.heads):
            rows = (roles[:, role] >= 0).nonzero(as_tuple=True)[0]
            if len(rows) == 0:
                continue
            frac = self.colour_targets(pixel_values) if frac is None else frac
            # The same pull at each supervised position: every token of the move must find the block.
            pos = torch.cat([query_pos[rows] + t for t in range(self.tokens)])
            rows = rows.repeat(self.tokens)
            loss = self.patch_cross_entropy(self.attention(rows, pos, head), frac[rows, :, roles[rows, role]])
            if loss is not None:
                total, count = total + loss, count + 1
        return total / max(count, 1)
