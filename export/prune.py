"""Structured pruning of the LLM (RLRC stage 1, LLM-Pruner style; design.md §4).

What is removed, and why these units: whole structures whose removal shrinks the matmuls, so the
pruned model is a plain Llama with smaller per-layer widths (no masks, no sparse kernels).

- **Attention groups.** One key/value head together with the query heads that read it
  (query head ``h`` reads kv head ``h // G``, ``G = heads / kv_heads``, as HF's ``repeat_kv``):
  ``q_proj`` rows ``[g*G*D, (g+1)*G*D)``, ``k_proj``/``v_proj`` rows ``[g*D, (g+1)*D)`` and the
  same ``o_proj`` columns as ``q_proj`` rows. For multi-head attention ``G = 1`` and a group is one
  head. Removing whole groups keeps ``G`` equal in every group, so the layer stays a valid GQA
  layer; ``head_dim`` never changes and ``hidden_size`` is never pruned.
- **MLP channels.** ``gate_proj``/``up_proj`` row ``c`` with ``down_proj`` column ``c``.
- **Decoder layers** (depth pruning, ``drop_layers``): removed whole before scoring.

Every pruned layer keeps at least one attention group and one MLP channel; the first
``keep_first`` and last ``keep_last`` layers are never touched. The vision towers, the projector,
the embeddings and ``lm_head`` are never touched.

Importance of a structure ``s`` (its weights ``W_s``):

- ``taylor``: ``sum_{w in W_s} |w * dL/dw|``, with ``dL/dw`` the gradient of the OpenVLA action-token
  loss (``export.train.sft.ActionLoss``) averaged over the calibration batches (LLM-Pruner's
  element-wise first-order term, summed over the structure). It estimates the loss increase of
  zeroing ``s``: a head whose ``o_proj`` columns are zero scores exactly 0.
- ``magnitude``: ``||W_s||_2``.
- ``random``: uniform in [0, 1), seeded.

How many of each to remove:

- ``scope='layer'`` (default, LLM-Pruner's choice): every pruned layer removes the same fraction
  ``r`` of its own prunable parameters. Attention groups and MLP channels are ranked separately
  within the layer (raw scores; all structures of one kind in one layer have the same size, so no
  normalisation is needed). About ``r`` of the groups go (``round(r * groups)``, at most all but
  one) and the MLP takes up the rounding, so the layer loses ``r`` of its parameters to within one
  channel.
- ``scope='global'``: one ranking over every structure of every pruned layer, removed in order
  until ``r`` of all prunable parameters are gone, so layers end up with different ratios. Here
  heads and channels compete, and a head holds ``(2G + 2) * D * hidden`` parameters against
  ``3 * hidden`` for a channel, so scores are normalised per parameter: ``taylor`` divides by
  the structure's parameter count (estimated loss increase per parameter saved: the greedy
  knapsack order), ``magnitude`` becomes the RMS of the weights (``||W_s|| / sqrt(n_s)``), ``random``
  stays uniform. Taylor scores are estimates of a loss change, so they are comparable across
  layers without any per-layer rescaling.

The ratio is the fraction of the *prunable* parameters removed: q/k/v/o and gate/up/down of the
layers that are width-pruned (not kept, not dropped). Parameters of dropped layers are reported
separately. ``ratio=0`` leaves every weight untouched (bitwise-identical outputs).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from export.model import LlamaDecoderLayer, OpenVLA
from rlrc_runtime.config import did_you_mean
from rlrc_runtime.errors import CheckpointError, ConfigError, MissingFileError

log = logging.getLogger(__name__)

METHODS = ("taylor", "magnitude", "random")
SCOPES = ("layer", "global")
MAX_RATIO = 0.9
DTYPE_CHOICES = ("float32", "bfloat16", "float16")
REPORT_FILE = "prune_report.json"
_STORED_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class PruneConfig:
    """How `rlrc-export prune` removes heads, MLP channels and layers from the LLM."""

    ratio: float | None = field(default=None, metadata={
        "help": f"fraction of the prunable LLM parameters (q/k/v/o + MLP of the pruned layers) to remove, 0..{MAX_RATIO}"})
    """Target fraction of prunable parameters removed, in [0, 0.9]. None with ``drop_layers`` means 0."""
    method: str = field(default="taylor", metadata={
        "help": "importance: first-order 'taylor' (needs --data), 'magnitude' (L2) or 'random'", "choices": list(METHODS)})
    """'taylor', 'magnitude' or 'random'."""
    scope: str = field(default="layer", metadata={
        "help": "'layer': the same ratio in every pruned layer (LLM-Pruner); 'global': one ranking across layers",
        "choices": list(SCOPES)})
    """'layer' (uniform ratio per pruned layer) or 'global' (one ranking, per-parameter scores)."""
    layer_ratios: tuple[float, ...] | None = field(default=None, metadata={
        "help": "per-layer ratios, one per decoder layer, e.g. 0,0.5,0.5,0 (instead of --ratio; --scope layer)"})
    """One ratio per decoder layer of the input model (a comma-separated string is accepted)."""
    keep_first: int = field(default=1, metadata={"help": "leave the first N decoder layers whole"})
    """First decoder layers left whole."""
    keep_last: int = field(default=1, metadata={"help": "leave the last N decoder layers whole"})
    """Last decoder layers left whole."""
    drop_layers: tuple[int, ...] = field(default=(), metadata={
        "help": "depth pruning: remove these decoder layers whole, e.g. 2,5 (indices of the input model)"})
    """Decoder layers removed whole (indices of the input model; a comma-separated string is accepted)."""
    data: str | None = field(default=None, metadata={
        "help": "calibration demonstrations: HDF5 file(s) as rlrc-train reads them, comma-separated"})
    """Demonstration HDF5 files (ours or LIBERO layout), comma-separated; needed by 'taylor'."""
    dataset_key: str | None = field(default=None, metadata={"help": "norm_stats key of the data; default: the file's dataset_name"})
    """Dataset whose norm_stats tokenize the calibration actions; None = the file's dataset_name."""
    calib_batches: int = field(default=8, metadata={"help": "calibration batches (gradients are averaged over them)"})
    """Number of calibration batches."""
    batch_size: int = field(default=16, metadata={"help": "samples per calibration batch"})
    """Samples per calibration batch."""
    seed: int = field(default=0, metadata={"help": "seed of the calibration sample and of --method random"})
    """Seed of the calibration sampling and of random importance."""
    dtype: str = field(default="float32", metadata={
        "help": "dtype the model is loaded and scored in (the output keeps the input's stored dtype)",
        "choices": list(DTYPE_CHOICES)})
    """Compute dtype while scoring; gradients accumulate in it, so float32 is the accurate choice."""
    device: str = field(default="auto", metadata={"help": "cpu, cuda[:i], or auto (cuda when available)"})
    """Where the model is scored and pruned."""
    progress: bool = field(default=True, metadata={"help": "show a progress bar over the calibration batches"})
    """Show a progress bar."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise parsed CLI strings once, here
        if isinstance(self.layer_ratios, str):
            set_(self, "layer_ratios", _parse_list(self.layer_ratios, float, "layer_ratios", "0,0.5,0.5,0") or None)
        elif self.layer_ratios is not None:
            set_(self, "layer_ratios", tuple(float(r) for r in self.layer_ratios))
        if isinstance(self.drop_layers, str):
            set_(self, "drop_layers", _parse_list(self.drop_layers, int, "drop_layers", "2,5"))
        else:
            set_(self, "drop_layers", tuple(int(i) for i in (self.drop_layers or ())))
        if self.method not in METHODS:
            raise ConfigError(f"method={self.method!r} is not one of {list(METHODS)}.{did_you_mean(str(self.method), METHODS)}")
        if self.scope not in SCOPES:
            raise ConfigError(f"scope={self.scope!r} is not one of {list(SCOPES)}.{did_you_mean(str(self.scope), SCOPES)}")
        if self.ratio is not None and self.layer_ratios is not None:
            raise ConfigError(f"ratio={self.ratio} and layer_ratios={list(self.layer_ratios)} are both set; "
                              "give --ratio for a uniform ratio or --layer-ratios for one per layer, not both")
        if self.ratio is None and self.layer_ratios is None:
            if not self.drop_layers:
                raise ConfigError("no pruning asked for: pass --ratio R (fraction of prunable LLM parameters, e.g. 0.5), "
                                  "--layer-ratios r0,r1,... or --drop-layers i,j")
            set_(self, "ratio", 0.0)
        if self.ratio is not None:
            _check_ratio("ratio", self.ratio)
        if self.layer_ratios is not None:
            for i, r in enumerate(self.layer_ratios):
                _check_ratio(f"layer_ratios[{i}]", r)
            if self.scope != "layer":
                raise ConfigError(f"layer_ratios with scope={self.scope!r}: per-layer ratios fix each layer's share, "
                                  "so they need --scope layer; use --ratio with --scope global")
        for name in ("keep_first", "keep_last", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name}={value!r} must be an int >= 0")
        for name in ("calib_batches", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be an int >= 1")
        if any(i < 0 for i in self.drop_layers):
            raise ConfigError(f"drop_layers={list(self.drop_layers)} has negative indices; give layer indices 0..L-1")
        if len(set(self.drop_layers)) != len(self.drop_layers):
            raise ConfigError(f"drop_layers={list(self.drop_layers)} repeats a layer; list each layer once")
        set_(self, "drop_layers", tuple(sorted(self.drop_layers)))
        if self.dtype not in DTYPE_CHOICES:
            raise ConfigError(f"dtype={self.dtype!r} is not one of {list(DTYPE_CHOICES)}")
        if self.data is not None and not self.data_files:
            raise ConfigError(f"data={self.data!r} names no file; pass one or more HDF5 files, comma-separated")

    @property
    def data_files(self) -> list[str]:
        return [p for p in (self.data or "").split(",") if p]


def _parse_list(text: str, kind: type, name: str, example: str) -> tuple:
    try:
        return tuple(kind(p) for p in text.replace(" ", "").split(",") if p)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a comma-separated list of {kind.__name__}s, e.g. {example}") from None


def _check_ratio(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= MAX_RATIO:
        raise ConfigError(f"{name}={value!r} is out of range: give a fraction of the prunable parameters in "
                          f"[0, {MAX_RATIO}] (0.5 removes half; at most {MAX_RATIO:.0%}, the largest ratio RLRC uses)")


# --------------------------------------------------------------------------- structures


@dataclass(frozen=True)
class LayerShape:
    """Widths of one decoder layer and the parameter count of each of its structures."""

    heads: int
    kv_heads: int
    intermediate: int
    head_dim: int
    hidden: int

    @property
    def group(self) -> int:
        """Query heads per kv head (G)."""
        return self.heads // self.kv_heads if self.kv_heads else 0

    @property
    def group_params(self) -> int:
        """q rows + k rows + v rows + o columns of one kv group."""
        return (2 * self.group + 2) * self.head_dim * self.hidden

    @property
    def channel_params(self) -> int:
        return 3 * self.hidden

    @property
    def prunable(self) -> int:
        return self.kv_heads * self.group_params + self.intermediate * self.channel_params


def layer_shape(layer: LlamaDecoderLayer) -> LayerShape:
    """The current widths of a decoder layer (0 heads / channels where a sub-block was removed)."""
    attn = layer.self_attn
    heads = attn.num_heads if layer.has_attn else 0
    kv = attn.num_kv_heads if layer.has_attn else 0
    inter = layer.mlp.gate_proj.out_features if layer.has_mlp else 0
    return LayerShape(heads, kv, inter, attn.head_dim, attn.q_proj.in_features)


@dataclass
class StructureScores:
    """Importance of one layer's structures (float64, CPU)."""

    attn: torch.Tensor
    """[kv_heads] one score per attention group (kv head + its query heads)."""
    mlp: torch.Tensor
    """[intermediate] one score per MLP channel."""


def _group_sum(per_weight: dict[str, torch.Tensor], shape: LayerShape) -> StructureScores:
    """Element-wise scores of the 7 weights -> per-structure sums."""
    a, g, d, h = shape.kv_heads, shape.group, shape.head_dim, shape.hidden
    attn = torch.zeros(a, dtype=torch.float64)
    if a:
        attn += per_weight["q_proj"].reshape(a, g * d * h).sum(1)
        attn += per_weight["k_proj"].reshape(a, d * h).sum(1)
        attn += per_weight["v_proj"].reshape(a, d * h).sum(1)
        attn += per_weight["o_proj"].reshape(h, a, g * d).sum((0, 2))
    mlp = torch.zeros(shape.intermediate, dtype=torch.float64)
    if shape.intermediate:
        mlp += per_weight["gate_proj"].sum(1) + per_weight["up_proj"].sum(1) + per_weight["down_proj"].sum(0)
    return StructureScores(attn, mlp)


def _weights(layer: LlamaDecoderLayer) -> dict[str, nn.Parameter]:
    out: dict[str, nn.Parameter] = {}
    if layer.has_attn:
        out.update({n: getattr(layer.self_attn, n).weight for n in ("q_proj", "k_proj", "v_proj", "o_proj")})
    if layer.has_mlp:
        out.update({n: getattr(layer.mlp, n).weight for n in ("gate_proj", "up_proj", "down_proj")})
    return out


# --------------------------------------------------------------------------- importance


def importance(
    model: OpenVLA,
    method: str,
    layers: Sequence[int],
    batches: Sequence[Any] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict[int, StructureScores], float | None]:
    """Score the attention groups and MLP channels of ``model.language_model.model.layers[i]``.

    Returns ({layer index: scores}, mean calibration loss or None). ``taylor`` runs forward and
    backward on every batch (``export.train.data.Batch``), gradients flowing only into the scored
    layers' weights; the model's ``requires_grad`` flags and gradients are restored afterwards.
    """
    decoder = model.language_model.model.layers
    if method == "random":
        gen = torch.Generator().manual_seed(seed)
        out = {}
        for i in layers:
            s = layer_shape(decoder[i])
            out[i] = StructureScores(torch.rand(s.kv_heads, generator=gen, dtype=torch.float64),
                                     torch.rand(s.intermediate, generator=gen, dtype=torch.float64))
        return out, None
    if method == "magnitude":
        out = {}
        with torch.no_grad():
            for i in layers:
                per_weight = {n: w.detach().double().pow(2).cpu() for n, w in _weights(decoder[i]).items()}
                sc = _group_sum(per_weight, layer_shape(decoder[i]))
                out[i] = StructureScores(sc.attn.sqrt(), sc.mlp.sqrt())
        return out, None
    if method != "taylor":
        raise ConfigError(f"method={method!r} is not one of {list(METHODS)}.{did_you_mean(method, METHODS)}")
    if not batches:
        raise ConfigError("method='taylor' needs calibration batches: pass --data demos.hdf5 (the files rlrc-train "
                          "reads), or choose --method magnitude / random")
    return _taylor(model, layers, batches, progress)


def _taylor(model: OpenVLA, layers: Sequence[int], batches: Sequence[Any],
            progress: bool) -> tuple[dict[int, StructureScores], float]:
    from tqdm import tqdm

    from export.train.sft import ActionLoss

    decoder = model.language_model.model.layers
    params = list(model.parameters())
    saved = [(p, p.requires_grad, p.grad) for p in params]
    scored = [w for i in layers for w in _weights(decoder[i]).values()]
    loss_fn = ActionLoss(model)
    losses = []
    try:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
        for w in scored:
            w.requires_grad_(True)
        with torch.enable_grad():
            for batch in tqdm(batches, desc="calibration", unit="batch", disable=not progress, dynamic_ncols=True):
                loss, _ = loss_fn(batch.to(model.device))
                (loss / len(batches)).backward()  # .grad accumulates the mean gradient over the batches
                losses.append(float(loss.detach()))
        out = {}
        with torch.no_grad():
            for i in layers:
                per_weight = {n: (w.detach() * w.grad).abs().double().cpu() if w.grad is not None
                              else torch.zeros(w.shape, dtype=torch.float64)
                              for n, w in _weights(decoder[i]).items()}
                out[i] = _group_sum(per_weight, layer_shape(decoder[i]))
    finally:
        for p, flag, grad in saved:
            p.grad = grad
            p.requires_grad_(flag)
    return out, float(np.mean(losses))


@torch.no_grad()
def calibration_loss(model: OpenVLA, batches: Sequence[Any]) -> float:
    """Mean ActionLoss of ``model`` over ``batches`` (no gradients)."""
    from export.train.sft import ActionLoss

    loss_fn = ActionLoss(model)
    return float(np.mean([float(loss_fn(b.to(model.device))[0]) for b in batches]))


# --------------------------------------------------------------------------- planning


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def layer_counts(shape: LayerShape, ratio: float) -> tuple[int, int]:
    """(attention groups, MLP channels) to remove so that the layer loses ``ratio`` of its
    prunable parameters: groups close to ``ratio`` of the groups, the MLP taking up the rounding;
    at least one group and one channel stay."""
    if ratio <= 0 or shape.prunable == 0:
        return 0, 0
    target = ratio * shape.prunable
    max_g = max(shape.kv_heads - 1, 0)
    max_c = max(shape.intermediate - 1, 0)
    best: tuple[tuple[float, float], int, int] | None = None
    for kg in range(max_g + 1):
        kc = min(max(_round((target - kg * shape.group_params) / shape.channel_params), 0), max_c)
        err = abs(kg * shape.group_params + kc * shape.channel_params - target)
        key = (_round(err / shape.channel_params), abs(kg - ratio * shape.kv_heads))
        if best is None or key < best[0]:
            best = (key, kg, kc)
    assert best is not None
    return best[1], best[2]


def _lowest(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the k lowest scores (ties: lowest index first)."""
    if k <= 0:
        return []
    order = sorted(range(len(scores)), key=lambda j: (float(scores[j]), j))
    return sorted(order[:k])


def _plan_layer_scope(shapes: dict[int, LayerShape], scores: dict[int, StructureScores],
                      ratios: dict[int, float]) -> dict[int, tuple[list[int], list[int]]]:
    plan = {}
    for i, shape in shapes.items():
        kg, kc = layer_counts(shape, ratios[i])
        plan[i] = (_lowest(scores[i].attn, kg), _lowest(scores[i].mlp, kc))
    return plan


def _plan_global_scope(shapes: dict[int, LayerShape], scores: dict[int, StructureScores], ratio: float,
                       method: str) -> dict[int, tuple[list[int], list[int]]]:
    def normalise(s: torch.Tensor, n: int) -> torch.Tensor:
        if method == "taylor":
            return s / n  # estimated loss increase per parameter removed
        if method == "magnitude":
            return s / math.sqrt(n)  # RMS of the structure's weights
        return s

    cands: list[tuple[float, int, int, int, int]] = []  # (score, layer, kind 0=attn 1=mlp, index, params)
    for i, shape in shapes.items():
        if shape.kv_heads:
            for j, v in enumerate(normalise(scores[i].attn, shape.group_params).tolist()):
                cands.append((v, i, 0, j, shape.group_params))
        if shape.intermediate:
            for j, v in enumerate(normalise(scores[i].mlp, shape.channel_params).tolist()):
                cands.append((v, i, 1, j, shape.channel_params))
    cands.sort()
    target = ratio * sum(s.prunable for s in shapes.values())
    left = {i: [s.kv_heads, s.intermediate] for i, s in shapes.items()}
    plan: dict[int, tuple[list[int], list[int]]] = {i: ([], []) for i in shapes}
    removed = 0
    for _, i, kind, j, n in cands:
        if removed >= target:
            break
        if left[i][kind] <= 1 or removed + n - target > target - removed:
            continue  # keep one of each per layer; skip what overshoots more than stopping would miss
        left[i][kind] -= 1
        plan[i][kind].append(j)
        removed += n
    return {i: (sorted(a), sorted(m)) for i, (a, m) in plan.items()}


# --------------------------------------------------------------------------- surgery


def _keep_rows(linear: nn.Linear, idx: torch.Tensor) -> None:
    w = linear.weight
    linear.weight = nn.Parameter(w.detach().index_select(0, idx.to(w.device)).contiguous(), requires_grad=w.requires_grad)
    linear.out_features = len(idx)


def _keep_cols(linear: nn.Linear, idx: torch.Tensor) -> None:
    w = linear.weight
    linear.weight = nn.Parameter(w.detach().index_select(1, idx.to(w.device)).contiguous(), requires_grad=w.requires_grad)
    linear.in_features = len(idx)


def prune_layer(layer: LlamaDecoderLayer, remove_groups: Sequence[int], remove_channels: Sequence[int]) -> None:
    """Remove attention groups (kv heads with their query heads) and MLP channels in place."""
    shape = layer_shape(layer)
    if remove_groups:
        keep = [g for g in range(shape.kv_heads) if g not in set(remove_groups)]
        if not keep:
            raise ConfigError("pruning would remove every attention group of a layer; at least one must stay")
        d, g = shape.head_dim, shape.group
        q_rows = torch.tensor([r for k in keep for r in range(k * g * d, (k + 1) * g * d)])
        kv_rows = torch.tensor([r for k in keep for r in range(k * d, (k + 1) * d)])
        attn = layer.self_attn
        _keep_rows(attn.q_proj, q_rows)
        _keep_rows(attn.k_proj, kv_rows)
        _keep_rows(attn.v_proj, kv_rows)
        _keep_cols(attn.o_proj, q_rows)
        attn.num_kv_heads = len(keep)
        attn.num_heads = len(keep) * g
    if remove_channels:
        drop = set(remove_channels)
        keep_c = torch.tensor([c for c in range(shape.intermediate) if c not in drop])
        if len(keep_c) == 0:
            raise ConfigError("pruning would remove every MLP channel of a layer; at least one must stay")
        _keep_rows(layer.mlp.gate_proj, keep_c)
        _keep_rows(layer.mlp.up_proj, keep_c)
        _keep_cols(layer.mlp.down_proj, keep_c)


def drop_layers(model: OpenVLA, indices: Iterable[int]) -> None:
    """Remove decoder layers in place and re-index the rest (their KV-cache slots follow)."""
    drop = set(indices)
    decoder = model.language_model.model
    kept = [layer for i, layer in enumerate(decoder.layers) if i not in drop]
    decoder.layers = nn.ModuleList(kept)
    for i, layer in enumerate(kept):
        layer.self_attn.layer = i
    _sync_config(model)


def _sync_config(model: OpenVLA) -> None:
    """Rewrite the model's LLMConfig from its modules' actual widths."""
    shapes = [layer_shape(layer) for layer in model.language_model.model.layers]
    llm = dataclasses.replace(
        model.config.llm,
        num_attention_heads=tuple(s.heads for s in shapes),
        num_key_value_heads=tuple(s.kv_heads for s in shapes),
        intermediate_size=tuple(s.intermediate for s in shapes),
    )
    model.config = model.config.replace(llm=llm)


# --------------------------------------------------------------------------- the stage


def _resolve_layers(cfg: PruneConfig, n: int) -> tuple[dict[int, float], set[int], set[int]]:
    """-> ({pruned layer: target ratio}, kept layers, dropped layers), indices of the input model."""
    dropped = set(cfg.drop_layers)
    bad = sorted(i for i in dropped if i >= n)
    if bad:
        raise ConfigError(f"drop_layers={list(cfg.drop_layers)}: the model has {n} decoder layers (0..{n - 1}); "
                          f"{bad} do not exist")
    if len(dropped) >= n:
        raise ConfigError(f"drop_layers={list(cfg.drop_layers)} removes all {n} decoder layers; keep at least one")
    kept = set(range(min(cfg.keep_first, n))) | set(range(max(n - cfg.keep_last, 0), n))
    clash = sorted(kept & dropped)
    if clash:
        raise ConfigError(f"drop_layers={list(cfg.drop_layers)} includes layers {clash}, which keep_first={cfg.keep_first} / "
                          f"keep_last={cfg.keep_last} keep whole; lower --keep-first/--keep-last or drop other layers")
    if cfg.layer_ratios is not None:
        if len(cfg.layer_ratios) != n:
            raise ConfigError(f"layer_ratios has {len(cfg.layer_ratios)} values but the model has {n} decoder layers; "
                              "give one ratio per layer, e.g. " + ",".join((["0"] + ["0.5"] * (n - 2) + ["0"]) if n > 1 else ["0.5"]))
        for i, r in enumerate(cfg.layer_ratios):
            if r > 0 and i in kept:
                raise ConfigError(f"layer_ratios[{i}]={r} but layer {i} is kept whole (keep_first={cfg.keep_first}, "
                                  f"keep_last={cfg.keep_last}); set it to 0 or pass --keep-first/--keep-last 0")
            if r > 0 and i in dropped:
                raise ConfigError(f"layer_ratios[{i}]={r} but layer {i} is in drop_layers; set it to 0")
        ratios = {i: r for i, r in enumerate(cfg.layer_ratios) if i not in kept and i not in dropped}
    else:
        ratios = {i: float(cfg.ratio or 0.0) for i in range(n) if i not in kept and i not in dropped}
    if not ratios and any(r > 0 for r in ([cfg.ratio or 0.0] + list(cfg.layer_ratios or []))):
        raise ConfigError(f"no decoder layer is left to prune: the model has {n} layers, keep_first={cfg.keep_first}, "
                          f"keep_last={cfg.keep_last}, drop_layers={list(cfg.drop_layers)}; lower --keep-first/--keep-last")
    return ratios, kept, dropped


def _sizes(model: OpenVLA, itemsize: int | None = None) -> dict[str, int]:
    def count(params: Iterable[torch.Tensor]) -> tuple[int, int]:
        n = b = 0
        for p in params:
            n += p.numel()
            b += p.numel() * (itemsize or p.element_size())
        return n, b

    llm_n, llm_b = count(model.language_model.parameters())
    tot_n, tot_b = count(model.parameters())
    dec_n, dec_b = count(model.language_model.model.layers.parameters())
    return {"llm_params": llm_n, "llm_bytes": llm_b, "total_params": tot_n, "total_bytes": tot_b,
            "decoder_params": dec_n, "decoder_bytes": dec_b}


def prune_model(model: OpenVLA, cfg: PruneConfig, calib_batches: Sequence[Any] | None = None) -> dict[str, Any]:
    """Prune ``model``'s LLM in place as ``cfg`` says; returns the report (see ``format_report``).

    ``calib_batches``: ``export.train.data.Batch`` objects (``load_calibration_batches``); needed by
    ``taylor``, optional otherwise (then the report carries the calibration loss before/after).
    ``model.config`` is replaced by one with the new per-layer widths.
    """
    t0 = time.perf_counter()
    batches = list(calib_batches or [])
    if cfg.method == "taylor" and not batches:
        raise ConfigError("method='taylor' needs calibration batches: pass --data demos.hdf5 (the files rlrc-train reads) "
                          "or calib_batches=..., or choose --method magnitude / random")
    llm = model.config.llm
    n = llm.num_layers
    ratios, kept, dropped = _resolve_layers(cfg, n)
    before_shapes = [layer_shape(layer) for layer in model.language_model.model.layers]
    before = _sizes(model)
    prunable_before = sum(before_shapes[i].prunable for i in ratios)
    dropped_params = sum(sum(p.numel() for p in model.language_model.model.layers[i].parameters()) for i in dropped)

    loss_before = None
    if batches and (cfg.method != "taylor" or dropped):
        loss_before = calibration_loss(model, batches)
    if dropped:
        drop_layers(model, dropped)
    position = {orig: pos for pos, orig in enumerate(i for i in range(n) if i not in dropped)}
    t_score = time.perf_counter()
    scored = [position[i] for i in sorted(ratios)]
    needs_scores = any(r > 0 for r in ratios.values())
    scores, taylor_loss = importance(model, cfg.method, scored, batches, cfg.seed, cfg.progress) if needs_scores else ({}, None)
    if loss_before is None and taylor_loss is not None:
        loss_before = taylor_loss
    t_score = time.perf_counter() - t_score

    t_prune = time.perf_counter()
    decoder = model.language_model.model.layers
    shapes = {i: layer_shape(decoder[position[i]]) for i in ratios}
    by_orig = {i: scores[position[i]] for i in ratios} if needs_scores else {}
    if not needs_scores:
        plan = {i: ([], []) for i in ratios}
    elif cfg.scope == "global":
        plan = _plan_global_scope(shapes, by_orig, float(cfg.ratio or 0.0), cfg.method)
    else:
        plan = _plan_layer_scope(shapes, by_orig, ratios)
    for i, (groups, channels) in plan.items():
        if groups or channels:
            prune_layer(decoder[position[i]], groups, channels)
    _sync_config(model)
    t_prune = time.perf_counter() - t_prune

    after_shapes = {i: layer_shape(decoder[position[i]]) for i in position}
    after = _sizes(model)
    prunable_after = sum(after_shapes[i].prunable for i in ratios)
    loss_after = calibration_loss(model, batches) if batches else None

    layers = []
    for i, s in enumerate(before_shapes):
        a = after_shapes.get(i)
        row: dict[str, Any] = {
            "index": i,
            "status": "dropped" if i in dropped else "kept" if i in kept else "pruned",
            "target_ratio": ratios.get(i, 1.0 if i in dropped else 0.0),
            "heads": [s.heads, a.heads if a else 0],
            "kv_heads": [s.kv_heads, a.kv_heads if a else 0],
            "intermediate_size": [s.intermediate, a.intermediate if a else 0],
            "prunable_params": [s.prunable, a.prunable if a else 0],
        }
        row["achieved_ratio"] = 1.0 - row["prunable_params"][1] / s.prunable if s.prunable else 0.0
        layers.append(row)
    achieved = 1.0 - prunable_after / prunable_before if prunable_before else 0.0
    target = (float(cfg.ratio) if cfg.layer_ratios is None else
              sum(ratios[i] * before_shapes[i].prunable for i in ratios) / prunable_before if prunable_before else 0.0)
    if target - achieved > 0.02:
        log.warning("removed %.1f%% of the prunable parameters, short of the %.1f%% asked: every pruned layer keeps one "
                    "attention group and one MLP channel (try --scope global, or fewer kept layers)",
                    100 * achieved, 100 * target)
    return {
        "method": cfg.method,
        "scope": cfg.scope,
        "ratio": target,
        "achieved_ratio": achieved,
        "layer_ratios": list(cfg.layer_ratios) if cfg.layer_ratios is not None else None,
        "keep_first": cfg.keep_first,
        "keep_last": cfg.keep_last,
        "drop_layers": list(cfg.drop_layers),
        "params": {
            "prunable_before": prunable_before, "prunable_after": prunable_after, "dropped_layer_params": dropped_params,
            **{f"{k}_before": v for k, v in before.items() if k.endswith("params")},
            **{f"{k}_after": v for k, v in after.items() if k.endswith("params")},
        },
        "bytes": {
            **{f"{k}_before": v for k, v in before.items() if k.endswith("bytes")},
            **{f"{k}_after": v for k, v in after.items() if k.endswith("bytes")},
        },
        "layers": layers,
        "calibration": {"batches": len(batches), "samples": sum(int(b.input_ids.shape[0]) for b in batches),
                        "loss_before": loss_before, "loss_after": loss_after},
        "wall_time_s": {"score": t_score, "prune": t_prune, "prune_model": time.perf_counter() - t0},
    }


# --------------------------------------------------------------------------- checkpoints


def load_calibration_batches(
    config: Any,
    checkpoint: str | Path,
    files: Sequence[str],
    n_batches: int,
    batch_size: int,
    seed: int = 0,
    dataset_key: str | None = None,
) -> list[Any]:
    """``n_batches`` batches of ``batch_size`` demonstration steps, as rlrc-train builds them
    (no augmentation): sampled without replacement while the data lasts, seeded."""
    from export.train.data import Collator, load_demos
    from rlrc_runtime.transforms import Transforms

    for f in files:
        if not Path(f).is_file():
            raise MissingFileError(f"calibration data {f!r} does not exist; pass demonstration HDF5 files with --data "
                                   "(e.g. from `rlrc-sim demos --out demos.hdf5`)")
    transforms = Transforms.from_checkpoint(checkpoint, config)
    ds = load_demos(list(files), transforms, dataset_key, config.norm_stats)
    gen = torch.Generator().manual_seed(seed)
    need = n_batches * batch_size
    order = torch.cat([torch.randperm(len(ds), generator=gen) for _ in range(math.ceil(need / len(ds)))])[:need].numpy()
    pad = config.llm.pad_token_id if config.llm.pad_token_id is not None else 0
    collate = Collator(ds.images, transforms, config.num_patches, pad, config.llm.eos_token_id)
    return [collate([ds.sample(int(i)) for i in order[b * batch_size : (b + 1) * batch_size]])
            for b in range(n_batches)]


def _resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but torch sees no CUDA GPU here; use --device cpu")
    return name


def prune_checkpoint(src: str | Path, out: str | Path, cfg: PruneConfig, overwrite: bool = False) -> dict[str, Any]:
    """Load ``src``, score, prune, save an OpenVLA checkpoint at ``out``; returns the report,
    also written to ``out/prune_report.json`` (with the resolved config)."""
    from export.checkpoint import load_model, save_checkpoint

    t0 = time.perf_counter()
    src, out = Path(src), Path(out)
    if cfg.method == "taylor" and not cfg.data_files:
        raise ConfigError("--method taylor needs calibration data: pass --data demos.hdf5 (the demonstration files "
                          "rlrc-train reads), or choose --method magnitude / random")
    if out.resolve() == src.resolve():
        raise ConfigError(f"--out {out} is the source checkpoint; write the pruned model to another directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    device = _resolve_device(cfg.device)
    model, info = load_model(src, dtype=cfg.dtype, device=device, require_norm_stats=False)
    t_load = time.perf_counter() - t0
    batches = []
    if cfg.data_files:
        batches = load_calibration_batches(info.config, src, cfg.data_files, cfg.calib_batches, cfg.batch_size,
                                           cfg.seed, cfg.dataset_key)
    t_data = time.perf_counter() - t0 - t_load
    report = prune_model(model, cfg, batches)
    head = info.tensors.get("language_model.lm_head.weight")
    stored = _STORED_DTYPES.get(head.dtype if head else "", cfg.dtype)
    t_save = time.perf_counter()
    save_checkpoint(model, out, tokenizer_dir=src, config=model.config, dtype=stored, overwrite=overwrite)
    t_save = time.perf_counter() - t_save
    itemsize = torch.empty((), dtype=getattr(torch, stored)).element_size()
    report["bytes"] = {}  # in the stored dtype: what the checkpoint files hold
    with torch.device("meta"):
        reference = OpenVLA(info.config)
    for when, m in (("before", reference), ("after", model)):
        report["bytes"].update({f"{k}_{when}": v for k, v in _sizes(m, itemsize).items() if k.endswith("bytes")})
    report.update({"source": str(src), "output": str(out), "stored_dtype": stored, "compute_dtype": cfg.dtype,
                   "device": device})
    report["calibration"].update({"files": cfg.data_files, "batch_size": cfg.batch_size, "seed": cfg.seed})
    report["wall_time_s"].update({"load": t_load, "calibration_data": t_data, "save": t_save,
                                  "total": time.perf_counter() - t0})
    report["config"] = asdict(cfg)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    log.info("pruned %s -> %s in %.1fs", src, out, report["wall_time_s"]["total"])
    return report


# --------------------------------------------------------------------------- report


def _m(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def format_report(report: dict[str, Any]) -> str:
    """The report as a table for the terminal."""
    p, b, cal = report["params"], report["bytes"], report["calibration"]
    lines = []
    head = f"pruned {report.get('source', 'model')} -> {report.get('output', '(in place)')}"
    lines.append(f"{head}: method {report['method']}, scope {report['scope']}, "
                 f"target {report['ratio']:.1%} / achieved {report['achieved_ratio']:.1%} of prunable params")
    lines.append(f"{'layer':>5}  {'status':7}  {'heads':>9}  {'kv heads':>9}  {'mlp':>13}  {'removed':>7}")
    for row in report["layers"]:
        h, kv, m = row["heads"], row["kv_heads"], row["intermediate_size"]
        if row["status"] == "dropped":
            lines.append(f"{row['index']:>5}  dropped  ({h[0]} heads, {kv[0]} kv heads, mlp {m[0]}: the whole layer)")
            continue
        lines.append(f"{row['index']:>5}  {row['status']:7}  {h[0]:>3} -> {h[1]:<3}  {kv[0]:>3} -> {kv[1]:<3}  "
                     f"{m[0]:>5} -> {m[1]:<5}  {row['achieved_ratio']:>7.1%}")
    lines.append(f"prunable     {_m(p['prunable_before'])} -> {_m(p['prunable_after'])}"
                 + (f" (+ {_m(p['dropped_layer_params'])} in dropped layers)" if p["dropped_layer_params"] else ""))
    lines.append(f"llm          {_m(p['llm_params_before'])} -> {_m(p['llm_params_after'])}, "
                 f"{_mib(b['llm_bytes_before'])} -> {_mib(b['llm_bytes_after'])}")
    lines.append(f"total        {_m(p['total_params_before'])} -> {_m(p['total_params_after'])}, "
                 f"{_mib(b['total_bytes_before'])} -> {_mib(b['total_bytes_after'])}")
    if cal["batches"]:
        files = cal.get("files")
        loss = ""
        if cal["loss_before"] is not None:
            loss = f", action loss {cal['loss_before']:.4f} -> {cal['loss_after']:.4f}"
        lines.append(f"calibration  {cal['batches']} batches, {cal['samples']} samples"
                     + (f" from {', '.join(files)}" if files else "") + loss)
    t = report["wall_time_s"]
    lines.append("wall time    " + ", ".join(f"{k} {v:.2f}s" for k, v in t.items()))
    return "\n".join(lines)
