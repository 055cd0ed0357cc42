"""The three deployment graphs as torch modules, written for export (static cache, argmax inside).

They reuse the weights of ``export.model.OpenVLA`` (no copies) and re-state only the parts of the
forward pass whose form matters to an inference engine:

- **vision**: pixel_values [1, 3 * n_towers, S, S] float32 -> projected patches [1, P, hidden].
- **prefill**: embeddings of ``[BOS, patches, prompt]`` [1, T, hidden] (or, with in-graph
  embeddings, input_ids [1, T_ids] + patches) -> first token, its logits and the keys/values of
  every position ``present_{key,value}_{i}`` [1, Hkv_i, T, D].
- **decode**: the previous token (its embedding [1, 1, hidden], or its id [1, 1]) + ``position``
  [1] + the static cache ``past_{key,value}_{i}`` [1, Hkv_i, S_max, D] -> next token, its logits
  and only this step's keys/values ``key_{i}``/``value_{i}`` [1, Hkv_i, 1, D]. The runtime owns
  the cache buffer and writes the new row at ``position``; positions >= ``position`` are masked,
  so the buffer's stale tail is never read. Returning one row instead of the whole cache keeps
  each step's traffic at the weights plus one cache read.

Grouped-query attention is computed by reshaping the queries to [B, Hkv, groups, T, D] and
broadcasting against [B, Hkv, 1, S, D] keys, so the cache is never repeated in memory. Softmax
runs in float32 whatever the weights' dtype. Layers whose attention (or MLP) was pruned away
entirely have no cache tensors (and no MLP), exactly as ``export.model`` skips them.

The action-only head keeps lm_head rows ``[vocab - n_bins, vocab)`` (31744..31999 for OpenVLA) and
adds the offset back after the argmax; it equals the full-vocabulary argmax whenever the full
argmax is an action token, which is what a trained OpenVLA emits at every action position.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.model import LlamaDecoderLayer, OpenVLA, rotate_half
from rlrc_runtime.errors import CheckpointError, ConfigError, NonFiniteOutputError, RLRCError

log = logging.getLogger(__name__)

EXPORTERS = ("dynamo", "torchscript")


class VisionGraph(nn.Module):
    """pixel_values [1, 3 * n_towers, S, S] float32 -> patches [1, P, hidden] (model dtype)."""

    def __init__(self, model: OpenVLA) -> None:
        super().__init__()
        self.vision_backbone = model.vision_backbone
        self.projector = model.projector
        self.dtype = model.dtype

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projector(self.vision_backbone(pixel_values.to(self.dtype)))


class _LLMGraph(nn.Module):
    """What prefill and decode share: layers, final norm, RoPE, the (possibly sliced) head."""

    def __init__(self, model: OpenVLA, action_head: bool, embeddings_in_graph: bool) -> None:
        super().__init__()
        cfg = model.config
        lm = model.language_model
        self.layers = lm.model.layers
        self.norm = lm.model.norm
        self.head_dim = cfg.llm.head_dim
        self.embeddings_in_graph = embeddings_in_graph
        if embeddings_in_graph:
            self.embed_tokens = lm.model.embed_tokens
        # RoPE frequencies as a constant of the graph (float32, as the model computes them).
        self.register_buffer("inv_freq", lm.model.rotary_emb.inv_freq.detach().clone().float(), persistent=False)
        if action_head:
            first = cfg.token_vocab_size - cfg.n_action_bins
            self.head_offset = first
            self.lm_head_weight = nn.Parameter(lm.lm_head.weight[first : cfg.token_vocab_size].detach().clone(),
                                               requires_grad=False)  # [n_bins, hidden]
        else:
            self.head_offset = 0
            self.lm_head_weight = lm.lm_head.weight  # [vocab, hidden]
        # Layers that keep attention own a cache; their indices fix the order of cache tensors.
        self.cache_layers = [i for i, layer in enumerate(self.layers) if layer.has_attn]

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [T] int64 -> cos, sin [1, 1, T, D] in ``dtype`` (angles in float32)."""
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]  # [T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[None, None], emb.sin().to(dtype)[None, None]

    def qkv(self, layer: LlamaDecoderLayer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x [1, T, hidden] -> q [1, Hkv, G, T, D], k, v [1, Hkv, T, D] (RoPE applied to q, k)."""
        attn = layer.self_attn
        b, t, _ = x.shape
        h = layer.input_layernorm(x)
        q = attn.q_proj(h).view(b, t, attn.num_heads, self.head_dim).transpose(1, 2)  # [1, H, T, D]
        k = attn.k_proj(h).view(b, t, attn.num_kv_heads, self.head_dim).transpose(1, 2)  # [1, Hkv, T, D]
        v = attn.v_proj(h).view(b, t, attn.num_kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        groups = attn.num_heads // attn.num_kv_heads
        # query head h reads kv head h // groups (HF repeat_kv), i.e. consecutive heads share one kv head
        q = q.reshape(b, attn.num_kv_heads, groups, t, self.head_dim)
        return q, k, v

    def attn_out(self, layer: LlamaDecoderLayer, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out [1, Hkv, G, T, D] -> residual x + o_proj(out)."""
        attn = layer.self_attn
        b, t = x.shape[0], x.shape[1]
        out = out.reshape(b, attn.num_heads, t, self.head_dim).transpose(1, 2).reshape(b, t, attn.num_heads * self.head_dim)
        return x + attn.o_proj(out)

    def mlp(self, layer: LlamaDecoderLayer, x: torch.Tensor) -> torch.Tensor:
        if not layer.has_mlp:
            return x
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def head(self, hidden_last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden of the last position [1, 1, hidden] -> (token [1] int64, logits [1, V'] float32).

        Kept 3-D so the exporter emits a MatMul with a constant [hidden, V'] weight, the form the
        weight quantizers (MatMulInteger, MatMulNBits) rewrite.
        """
        logits = torch.matmul(self.norm(hidden_last), self.lm_head_weight.t()).float()[:, 0]  # [1, V']
        token = logits.argmax(dim=-1) + self.head_offset
        return token, logits


    def prompt_embeds(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The graph's inputs -> embeddings of ``[BOS, patches, prompt]`` [1, T, hidden]."""
        if not self.embeddings_in_graph:
            return inputs[0]  # [1, T, hidden]
        input_ids, patches = inputs  # [1, T_ids] int64, [1, P, hidden]
        tok = self.embed_tokens(input_ids)
        return torch.cat([tok[:, :1], patches.to(tok.dtype), tok[:, 1:]], dim=1)


class PrefillGraph(_LLMGraph):
    """[BOS, patches, prompt] -> first token, logits, present keys/values of every cached layer."""

    def forward(self, *inputs: torch.Tensor):
        x = self.prompt_embeds(inputs)
        t = x.shape[1]
        positions = torch.arange(t, device=x.device)
        cos, sin = self.rope(positions, x.dtype)
        scale = self.head_dim**-0.5
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()  # [T, T]
        presents: list[torch.Tensor] = []
        for layer in self.layers:
            if layer.has_attn:
                q, k, v = self.qkv(layer, x, cos, sin)
                scores = torch.matmul(q, k.unsqueeze(2).transpose(-1, -2)).float() * scale  # [1, Hkv, G, T, T]
                scores = scores.masked_fill(~causal, float("-inf"))
                probs = scores.softmax(dim=-1).to(v.dtype)
                out = torch.matmul(probs, v.unsqueeze(2))  # [1, Hkv, G, T, D]
                x = self.attn_out(layer, x, out)
                presents += [k, v]
            x = self.mlp(layer, x)
        token, logits = self.head(x[:, -1:])
        return (token, logits, *presents)


class DecodeGraph(_LLMGraph):
    """previous token + position + static cache -> next token, logits, this step's keys/values."""

    def forward(self, token_in: torch.Tensor, position: torch.Tensor, *past: torch.Tensor):
        if self.embeddings_in_graph:
            x = self.embed_tokens(token_in)  # [1, 1] int64 -> [1, 1, hidden]
        else:
            x = token_in  # [1, 1, hidden]
        max_len = past[0].shape[2]
        cos, sin = self.rope(position, x.dtype)  # position [1] int64
        scale = self.head_dim**-0.5
        valid = torch.arange(max_len, device=x.device) < position  # [S_max] bool: cached positions
        news: list[torch.Tensor] = []
        c = 0
        for layer in self.layers:
            if layer.has_attn:
                past_k, past_v = past[2 * c], past[2 * c + 1]  # [1, Hkv, S_max, D]
                c += 1
                q, k, v = self.qkv(layer, x, cos, sin)  # q [1, Hkv, G, 1, D], k/v [1, Hkv, 1, D]
                s_past = torch.matmul(q, past_k.unsqueeze(2).transpose(-1, -2)).float() * scale  # [1, Hkv, G, 1, S_max]
                s_past = s_past.masked_fill(~valid, float("-inf"))
                s_self = torch.matmul(q, k.unsqueeze(2).transpose(-1, -2)).float() * scale  # [1, Hkv, G, 1, 1]
                probs = torch.cat([s_past, s_self], dim=-1).softmax(dim=-1).to(v.dtype)
                out = torch.matmul(probs[..., :max_len], past_v.unsqueeze(2)) + probs[..., max_len:] * v.unsqueeze(2)
                x = self.attn_out(layer, x, out)
                news += [k, v]
            x = self.mlp(layer, x)
        token, logits = self.head(x[:, -1:])
        return (token, logits, *news)


class ChunkGraph(_LLMGraph):
    """Parallel decoding (OpenVLA-OFT): [BOS, patches, prompt] + ``n_tokens`` empty slots -> every
    action token of the chunk (tokens [1, N] int64, logits [1, N, V'] float32) from one pass.

    The slots (zero embeddings, or the model's learned ``action_slots``) sit at positions T .. T + N - 1,
    a constant of the graph; the prompt is causal, the slots see
    the whole prompt and each other (``export.model.parallel_mask``). No cache: nothing follows.
    """

    def __init__(self, model: OpenVLA, action_head: bool, embeddings_in_graph: bool, n_tokens: int) -> None:
        super().__init__(model, action_head, embeddings_in_graph)
        self.n_tokens = n_tokens
        self.register_buffer("slots", model.slot_embeds(n_tokens).detach().clone(), persistent=False)  # zeros or action_slots

    def forward(self, *inputs: torch.Tensor):
        prompt = self.prompt_embeds(inputs)
        t, n = prompt.shape[1], self.n_tokens
        x = torch.cat([prompt, self.slots.to(prompt.dtype)[None]], dim=1)  # [1, T + N, hidden]
        pos = torch.arange(t + n, device=x.device)
        cos, sin = self.rope(pos, x.dtype)
        slots = pos >= t
        allowed = (pos[:, None] >= pos[None, :]) | (slots[:, None] & slots[None, :])  # [L, L]
        scale = self.head_dim**-0.5
        for layer in self.layers:
            if layer.has_attn:
                q, k, v = self.qkv(layer, x, cos, sin)
                scores = torch.matmul(q, k.unsqueeze(2).transpose(-1, -2)).float() * scale  # [1, Hkv, G, L, L]
                probs = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1).to(v.dtype)
                x = self.attn_out(layer, x, torch.matmul(probs, v.unsqueeze(2)))
            x = self.mlp(layer, x)
        logits = torch.matmul(self.norm(x[:, t:]), self.lm_head_weight.t()).float()  # [1, N, V']
        return logits.argmax(dim=-1) + self.head_offset, logits


# --------------------------------------------------------------------------- the export stage


class ExportError(RLRCError):
    """A graph could not be exported, or the exported graph disagrees with the PyTorch model."""


@dataclass(frozen=True)
class OnnxExportConfig:
    """How `rlrc-export onnx` turns a checkpoint into a bundle of three ONNX graphs."""

    precision: str = field(default="fp32", metadata={"help": "weights and activations of the graphs",
                                                     "choices": ["fp32", "fp16"]})
    """'fp32' or 'fp16' (quantize an fp32 bundle afterwards for int8/int4)."""
    max_seq_len: int | None = field(default=None, metadata={
        "help": "static cache length S_max (1 + patches + prompt + action tokens must fit); default patches + 128"})
    """Static cache length; None = patches + 128 (OpenVLA prompts are 15-40 tokens)."""
    embeddings: str = field(default="host", metadata={
        "help": "where text embeddings are looked up: 'host' (numpy table in the bundle) or 'graph'",
        "choices": ["host", "graph"]})
    """'host': the table is embed_tokens.npy and the graphs take embeddings; 'graph': they take ids."""
    head: str = field(default="full", metadata={
        "help": "'full' vocabulary argmax (OpenVLA) or 'action': only the n_bins action rows of lm_head",
        "choices": ["full", "action"]})
    """'action' keeps only the action rows of lm_head; equal to 'full' whenever the full argmax is an action token."""
    exporter: str = field(default="dynamo", metadata={"help": "torch.onnx exporter", "choices": list(EXPORTERS)})
    """'dynamo' (torch.export + onnxscript, the maintained path) or 'torchscript' (legacy, faster to run)."""
    opset: int = field(default=18, metadata={"help": "ONNX opset"})
    """ONNX opset version of the graphs."""
    check: bool = field(default=True, metadata={"help": "run the exported graphs once with ONNX Runtime against PyTorch"})
    """Compare one random input through ONNX Runtime and PyTorch and record the errors in the manifest."""

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16"):
            raise ConfigError(f"precision={self.precision!r}: export writes 'fp32' or 'fp16'; "
                              "use `rlrc-export quantize` on an fp32 bundle for 'int8'/'int4'")
        if self.embeddings not in ("host", "graph"):
            raise ConfigError(f"embeddings={self.embeddings!r}; choose 'host' or 'graph'")
        if self.head not in ("full", "action"):
            raise ConfigError(f"head={self.head!r}; choose 'full' or 'action'")
        if self.exporter not in EXPORTERS:
            raise ConfigError(f"exporter={self.exporter!r}; choose one of {EXPORTERS}")
        if self.max_seq_len is not None and self.max_seq_len < 8:
            raise ConfigError(f"max_seq_len={self.max_seq_len} is too small; it must hold BOS, the patches and the prompt")
        if self.opset < 17:
            raise ConfigError(f"opset={self.opset}: the graphs need opset >= 17 (LayerNormalization)")


def cache_names(cache_layers: list[int], prefix: str) -> list[str]:
    """['{prefix}key_{i}', '{prefix}value_{i}', ...] in cache order."""
    return [f"{prefix}{kv}_{i}" for i in cache_layers for kv in ("key", "value")]


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            cfg: OnnxExportConfig, dynamic: dict[str, dict[int, tuple[str, int, int]]]) -> None:
    """One torch.onnx.export call; ``dynamic`` maps input/output name -> {axis: (name, min, max)}."""
    kwargs: dict[str, Any] = {"input_names": input_names, "output_names": output_names, "opset_version": cfg.opset}
    if cfg.exporter == "dynamo":
        dims: dict[str, Any] = {}
        shapes = []
        for name in input_names:
            axes = dynamic.get(name, {})
            spec = {}
            for axis, (dim_name, lo, hi) in axes.items():
                dims.setdefault(dim_name, torch.export.Dim(dim_name, min=lo, max=hi))
                spec[axis] = dims[dim_name]
            shapes.append(spec or None)
        # forward(*inputs) takes the inputs as one tuple argument; forward(a, b, *past) as (a, b, (past...)).
        kwargs.update(dynamo=True, dynamic_shapes=_shape_structure(module, shapes) if dims else None,
                      verbose=False, optimize=True)
    else:
        kwargs.update(dynamo=False, dynamic_axes={n: {a: d[0] for a, d in ax.items()} for n, ax in dynamic.items()},
                      do_constant_folding=True)
    quiet = io.StringIO()
    # The dynamo exporter warns once per torchvision op it cannot register (no torchvision here, by design).
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    for chatty in ("onnx_ir", "onnxscript"):  # per-initializer INFO lines from the graph optimizer
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(path), **kwargs)
    except Exception as exc:  # the exporters raise many types; name the graph and keep the cause
        raise ExportError(f"exporting {path.name} with the {cfg.exporter} exporter failed: {type(exc).__name__}: "
                          f"{str(exc)[:2000]}; try --exporter {'torchscript' if cfg.exporter == 'dynamo' else 'dynamo'}") from exc


def _shape_structure(module: nn.Module, shapes: list[Any]) -> tuple:
    if isinstance(module, (PrefillGraph, ChunkGraph)):
        return (tuple(shapes),)
    if isinstance(module, DecodeGraph):
        return (shapes[0], shapes[1], tuple(shapes[2:]))
    return tuple(shapes)


def export_graphs(model: OpenVLA, cfg: OnnxExportConfig, work: Path, chunk_tokens: int = 0) -> dict[str, Any]:
    """Export vision/prefill/decode (autoregressive) or vision/chunk (``chunk_tokens`` > 0, parallel
    decoding) into ``work`` -> {'paths', 'max_seq_len', 'cache_layers', 'head_offset'}."""
    if chunk_tokens:
        return _export_chunk_graphs(model, cfg, work, chunk_tokens)
    config = model.config
    llm = config.llm
    P, H, D = config.num_patches, llm.hidden_size, llm.head_dim
    max_seq_len = cfg.max_seq_len or P + 128
    if max_seq_len < P + 3:
        raise ConfigError(f"max_seq_len={max_seq_len} cannot hold BOS, {P} patches and a prompt; use >= {P + 16}")
    dtype = model.dtype
    in_graph = cfg.embeddings == "graph"
    action_head = cfg.head == "action"
    vision = VisionGraph(model).eval()
    prefill = PrefillGraph(model, action_head, in_graph).eval()
    decode = DecodeGraph(model, action_head, in_graph).eval()
    layers = prefill.cache_layers
    if not layers:
        raise ExportError("every layer's attention was pruned away; a decoder without attention cannot use a KV cache")
    S = config.image_size
    C = 3 * len(config.towers)
    paths = {name: work / f"{name}.onnx" for name in ("vision", "prefill", "decode")}
    gen = torch.Generator().manual_seed(0)
    t_ids = 24  # sample prompt length: BOS + ~22 tokens + 29871
    with torch.no_grad():
        start = time.perf_counter()
        _export(vision, (torch.randn(1, C, S, S, generator=gen),), paths["vision"], ["pixel_values"], ["patches"], cfg, {})
        log.info("exported vision graph in %.1f s", time.perf_counter() - start)

        start = time.perf_counter()
        presents = cache_names(layers, "present_")
        seq_max = max_seq_len - 1  # at least one decode position stays free
        if in_graph:
            args = (torch.randint(0, 32000, (1, t_ids), generator=gen), torch.randn(1, P, H, generator=gen).to(dtype))
            names = ["input_ids", "patches"]
            dyn = {"input_ids": {1: ("ids", 2, seq_max - P)}}
        else:
            args = (torch.randn(1, 1 + P + t_ids - 1, H, generator=gen).to(dtype),)
            names = ["inputs_embeds"]
            dyn = {"inputs_embeds": {1: ("seq", P + 2, seq_max)}}
        dyn.update({n: {2: ("seq", P + 2, seq_max)} for n in presents})
        _export(prefill, args, paths["prefill"], names, ["token", "logits", *presents], cfg, dyn)
        log.info("exported prefill graph in %.1f s", time.perf_counter() - start)

        start = time.perf_counter()
        past = [torch.zeros(1, llm.num_key_value_heads[i], max_seq_len, D, dtype=dtype) for i in layers for _ in "kv"]
        tok = torch.tensor([[31800]]) if in_graph else torch.randn(1, 1, H, generator=gen).to(dtype)
        args = (tok, torch.tensor([P + t_ids]), *past)
        _export(decode, args, paths["decode"], ["token_id" if in_graph else "token_embeds", "position",
                *cache_names(layers, "past_")], ["token", "logits", *cache_names(layers, "")], cfg, {})
        log.info("exported decode graph in %.1f s", time.perf_counter() - start)
    return {"paths": paths, "max_seq_len": max_seq_len, "cache_layers": layers,
            "head_offset": prefill.head_offset}


def _export_chunk_graphs(model: OpenVLA, cfg: OnnxExportConfig, work: Path, n_tokens: int) -> dict[str, Any]:
    """vision + one chunk graph; ``max_seq_len`` bounds the prompt plus the chunk's slots."""
    config = model.config
    P, H = config.num_patches, config.llm.hidden_size
    max_seq_len = cfg.max_seq_len or P + 128
    if max_seq_len < P + 3 + n_tokens:
        raise ConfigError(f"max_seq_len={max_seq_len} cannot hold BOS, {P} patches, a prompt and {n_tokens} action "
                          f"slots; use >= {P + 16 + n_tokens}")
    in_graph = cfg.embeddings == "graph"
    chunk = ChunkGraph(model, cfg.head == "action", in_graph, n_tokens).eval()
    paths = {name: work / f"{name}.onnx" for name in ("vision", "chunk")}
    gen = torch.Generator().manual_seed(0)
    t_ids, seq_max = 24, max_seq_len - n_tokens
    S, C = config.image_size, 3 * len(config.towers)
    with torch.no_grad():
        start = time.perf_counter()
        _export(VisionGraph(model).eval(), (torch.randn(1, C, S, S, generator=gen),), paths["vision"],
                ["pixel_values"], ["patches"], cfg, {})
        if in_graph:
            args = (torch.randint(0, 32000, (1, t_ids), generator=gen), torch.randn(1, P, H, generator=gen).to(model.dtype))
            names, dyn = ["input_ids", "patches"], {"input_ids": {1: ("ids", 2, seq_max - P)}}
        else:
            args = (torch.randn(1, P + t_ids, H, generator=gen).to(model.dtype),)
            names, dyn = ["inputs_embeds"], {"inputs_embeds": {1: ("seq", P + 2, seq_max)}}
        _export(chunk, args, paths["chunk"], names, ["tokens", "logits"], cfg, dyn)
        log.info("exported vision and chunk graphs (%d action tokens per pass) in %.1f s", n_tokens,
                 time.perf_counter() - start)
    return {"paths": paths, "max_seq_len": max_seq_len, "cache_layers": [], "head_offset": chunk.head_offset}


def export_onnx(checkpoint: str | Path, out: str | Path, cfg: OnnxExportConfig = OnnxExportConfig(),
                overwrite: bool = False, command: str | None = None) -> Path:
    """Checkpoint directory -> bundle directory (three graphs, tokenizer, manifest). Returns ``out``."""
    import onnx

    from export.bundle import (abandon_out, copy_tokenizer_files, graph_spec, prepare_out, save_graphs, stage_record,
                               tool_versions, write_bundle)
    from export.checkpoint import load_model
    from rlrc_runtime.checkpoint import image_stats
    from rlrc_runtime.manifest import LLMSpec, Manifest
    from rlrc_runtime.prompt import PROMPT_TEMPLATE, SPIECE_UNDERLINE_ID, PromptTokenizer

    checkpoint, out = Path(checkpoint), Path(out)
    model, info = load_model(checkpoint, dtype="float16" if cfg.precision == "fp16" else "float32")
    require_finite_weights(model, checkpoint)
    config = info.config
    chunk_tokens = parallel_tokens(config, checkpoint)
    tmp = prepare_out(out, overwrite)
    try:
        with tempfile.TemporaryDirectory() as work_dir:
            work = Path(work_dir)
            exported = export_graphs(model, cfg, work, chunk_tokens)
            graphs = {name: onnx.load(str(p), load_external_data=True) for name, p in exported["paths"].items()}
            vision_bytes = save_graphs(tmp, {"vision": graphs["vision"]}, "vision.onnx.data")
            llm_bytes = save_graphs(tmp, {n: g for n, g in graphs.items() if n != "vision"}, "llm.onnx.data")
        np_dtype = "float16" if cfg.precision == "fp16" else "float32"
        embed_file = None
        if cfg.embeddings == "host":
            embed_file = "embed_tokens.npy"
            table = model.language_model.model.embed_tokens.weight.detach().cpu().numpy().astype(np_dtype)
            np.save(tmp / embed_file, table)  # [vocab, hidden]
        copy_tokenizer_files(checkpoint, tmp)
        tok = PromptTokenizer.from_dir(checkpoint)
        means, stds = image_stats(checkpoint, config)
        layers = exported["cache_layers"]
        hf = config.to_hf_dict()
        hf.pop("norm_stats", None)
        specs = {"vision": graph_spec(graphs["vision"], "vision.onnx", cfg.precision, ("vision.onnx.data",),
                                      vision_bytes["vision"])}
        specs.update({n: graph_spec(graphs[n], f"{n}.onnx", cfg.precision, ("llm.onnx.data",), b)
                      for n, b in llm_bytes.items()})
        facts: dict[str, Any] = {"source": str(checkpoint.resolve())}
        manifest = Manifest(
            model_config=hf,
            norm_stats=config.norm_stats or {},
            prompt={"template": PROMPT_TEMPLATE, "bos_token_id": tok.bos_token_id, "add_bos": tok.add_bos,
                    "append_token_id": SPIECE_UNDERLINE_ID},
            image={"size": config.image_size, "means": [list(m) for m in means], "stds": [list(s) for s in stds],
                   "resize": "pil-bicubic"},
            action={"vocab_size": config.token_vocab_size, "n_bins": config.n_action_bins,
                    "first_token": config.token_vocab_size - config.n_action_bins},
            llm=LLMSpec(
                max_seq_len=exported["max_seq_len"], embeddings=cfg.embeddings, head=cfg.head,
                head_offset=exported["head_offset"], cache_layers=tuple(layers),
                kv_heads=tuple(config.llm.num_key_value_heads[i] for i in layers), head_dim=config.llm.head_dim,
                cache_dtype=np_dtype, embed_file=embed_file, decoding=config.decoding, chunk_tokens=chunk_tokens,
            ),
            graphs=specs,
            versions=tool_versions(),
            stages=(stage_record("onnx", cfg, command or f"rlrc-export onnx --checkpoint {checkpoint} --out {out}", **facts),),
        )
        if cfg.check:
            errors = check_against_torch(model, tmp, manifest)
            manifest = _with_stage_facts(manifest, check=errors)
        out = write_bundle(tmp, out, manifest)
    except BaseException:
        abandon_out(tmp, out)
        raise
    log.info("wrote bundle %s (%s, embeddings on the %s, %s head, S_max %d)", out, cfg.precision, cfg.embeddings,
             cfg.head, exported["max_seq_len"])
    return out


def _with_stage_facts(manifest: Any, **facts: Any) -> Any:
    import dataclasses

    stages = list(manifest.stages)
    stages[-1] = {**stages[-1], **facts}
    return dataclasses.replace(manifest, stages=tuple(stages))


def parallel_tokens(config: Any, checkpoint: Path) -> int:
    """Action tokens per pass of a parallel-decoding model (K x action dimensions); 0 if autoregressive."""
    if config.decoding != "parallel":
        return 0
    from export.model import action_slot_count

    try:
        return action_slot_count(config)
    except ConfigError as exc:
        raise ConfigError(f"{checkpoint}: a parallel-decoding bundle fixes its chunk's token count: {exc}") from None


def require_finite_weights(model: nn.Module, checkpoint: Path) -> None:
    """Refuse to export a model with a NaN or Inf weight: every action it produced would be unsafe."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{checkpoint}: weight {name} holds {bad} NaN/Inf values of {tensor.numel()}; the checkpoint is "
                "damaged (a diverged training run or a corrupted copy). Export a checkpoint that trained cleanly"
            )


def _reference_logits(model: OpenVLA, ids: torch.Tensor, patches: torch.Tensor, chunk_tokens: int) -> np.ndarray:
    """PyTorch's logits for the first graph's output: the last prompt position [1, vocab], or every
    slot of a parallel chunk [1, N, vocab]."""
    from export.model import parallel_mask

    lm = model.language_model
    embeds = model.multimodal_embeds(ids, patches)
    if not chunk_tokens:
        return lm.lm_head(lm.model(embeds)[:, -1]).float().numpy()
    first = embeds.shape[1]
    embeds = torch.cat([embeds, embeds.new_zeros(1, chunk_tokens, embeds.shape[2])], dim=1)
    mask = parallel_mask(torch.tensor([first]), torch.tensor([chunk_tokens]), embeds.shape[1])
    return lm.lm_head(lm.model(embeds, mask=mask)[:, first:]).float().numpy()


def check_against_torch(model: OpenVLA, bundle: Path, manifest: Any, seed: int = 0) -> dict[str, float | bool]:
    """One random frame + prompt through ONNX Runtime and PyTorch: max-abs errors and token match."""
    import onnxruntime as ort

    from rlrc_runtime.backends.onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(bundle, manifest.vla_config(), manifest=manifest, verify=False)
    backend.activate()
    try:
        rng = np.random.default_rng(seed)
        c = model.config
        pixels = rng.standard_normal((1, 3 * len(c.towers), c.image_size, c.image_size)).astype(np.float32)
        ids = np.concatenate([[1], rng.integers(100, 31000, 20), [29871]]).astype(np.int64)
        patches = backend.encode_image(pixels)
        n = manifest.llm.chunk_tokens or 7
        try:
            tokens = backend.generate(patches, ids, n)
        except NonFiniteOutputError as exc:
            raise CheckpointError(f"refusing to write the bundle: the exported graphs produce NaN/Inf ({exc})") from exc
        with torch.inference_mode():
            ref_patches = model.embed_image(torch.from_numpy(pixels))
            generate = model.generate_parallel if manifest.llm.chunk_tokens else model.generate
            ref_tokens = generate(ref_patches, torch.from_numpy(ids)[None], n)[0].numpy()
            ref_logits = _reference_logits(model, torch.from_numpy(ids)[None], ref_patches, manifest.llm.chunk_tokens)
        off = manifest.llm.head_offset
        got = backend.last_logits[0]
        ref_logits = ref_logits[..., off : off + got.shape[-1]]
        out = {
            "vision_max_abs": float(np.abs(patches.astype(np.float32) - ref_patches.float().numpy()).max()),
            "prefill_logits_max_abs": float(np.abs(got - ref_logits).max()),
            "tokens_equal": bool(tokens.tolist() == ref_tokens.tolist()),
            "onnxruntime": ort.__version__,
        }
    finally:
        backend.deactivate()
    log.info("export check: %s", out)
    return out
