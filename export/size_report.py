"""`rlrc-export size-report`: the compressed bundle's bytes at OpenVLA-7B's real widths, measured.

No 7B checkpoint exists on these machines, and a 7B model does not fit a 24 GB machine next to
other work, so the report builds the model's pieces one at a time with random weights, at their
real widths, and runs each through the same export and quantization code a bundle goes through:

- **one Llama-2-7B decoder layer** (hidden 4096, 32 heads of 128, MLP 11008), exported whole, then
  pruned in place by ``export.prune.prune_model`` (the same rule as ``rlrc-export prune``: the
  layer loses ``prune_ratio`` of its prunable parameters as attention groups + MLP channels) and
  exported again;
- **the vision towers** (DINOv2 ViT-L/14-reg4 and SigLIP so400m/14 at 224 px, up to the feature
  block; the blocks after it are never computed and are not in the graph) and the **projector**
  (2176 -> 8704 -> 4096 -> 4096);
- **the tables**: the host embedding table (32064 x 4096, per-row quantization of
  ``rlrc_runtime.embeddings``), the action-only head (256 x 4096) and the full lm_head.

Each piece is exported to ONNX (fp32) and quantized with ``export.quantize_deploy.quantize_graph``;
its **stored bytes** are the sizes of the files ``export.bundle.save_graphs`` writes (graph +
external data, page alignment included). The full model is then **scaled**: OpenVLA-7B has 32
decoder layers and ``rlrc-export prune`` keeps the first and the last whole, so the decoder is
``2 x whole layer + 30 x pruned layer`` (with the layer-scope rule every pruned layer has the same
widths, so the scaling is exact up to a few bytes of graph per layer). The base it is compared with
is the HF checkpoint in bf16: every parameter of the architecture (unused tower blocks included)
at 2 bytes, computed from the parameter count.

The report also records, per control-step stage, the weight bytes a step reads and the FLOPs it
does (from the shapes), which ``rlrc-bench --project DEVICE`` turns into a projected latency.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.model import OpenVLA, RotaryEmbedding
from rlrc_runtime.config import VISION_BACKBONES, LLMConfig, VLAConfig, tower_from_timm_id
from rlrc_runtime.errors import ConfigError

log = logging.getLogger(__name__)

SCHEMA = "rlrc-size-report/1"
QUANT = ("int8", "int4")
PAPER = {"source": "RLRC (arXiv 2506.17639), OpenVLA-7B", "base_gb": 14.86, "compressed_gb": 1.77}
# The stage lengths of one OpenVLA control step: BOS + 256 patches + a ~20-token prompt.
PROMPT_TOKENS = 21
ACTION_TOKENS = 7


@dataclass(frozen=True)
class SizeReportConfig:
    """What `rlrc-export size-report` builds and measures."""

    like: str = field(default="openvla-7b", metadata={"help": "the model whose real widths are measured",
                                                      "choices": ["openvla-7b"]})
    """Architecture to reproduce (only OpenVLA-7B today)."""
    prune_ratio: float = field(default=0.75, metadata={
        "help": "fraction of each pruned decoder layer's prunable parameters removed (rlrc-export prune --ratio)"})
    """Ratio of the layer-scope pruning rule; the first and last layers stay whole."""
    quantize: str = field(default="int4,int8", metadata={
        "help": "precisions of the compressed bundle to report, comma-separated (int4, int8)"})
    """Quantized precisions measured (the LLM, head and host table at that precision; vision int8)."""
    out: str = field(default="benchmarks/results/size_report_openvla7b", metadata={
        "help": "output path stem: writes STEM.json and STEM.md"})
    """Where the report goes."""
    work: str | None = field(default=None, metadata={"help": "scratch directory for the exported pieces (default: a temporary one)"})
    """Exported ONNX pieces (several GB at fp32); removed when it is the temporary default."""
    block_size: int = field(default=32, metadata={"help": "int4: input channels per quantization block (as rlrc-export quantize)"})
    """MatMulNBits block size of the int4 pieces."""
    method: str = field(default="magnitude", metadata={
        "help": "pruning importance choosing which structures go (sizes do not depend on it)",
        "choices": ["magnitude", "random"]})
    """Importance used by the pruning rule on the random layer."""
    seed: int = field(default=0, metadata={"help": "seed of the random weights"})
    """Seed of the pieces' random weights."""

    def __post_init__(self) -> None:
        if self.like != "openvla-7b":
            raise ConfigError(f"--like {self.like!r}: only 'openvla-7b' is known")
        if not 0.0 <= self.prune_ratio <= 0.9:
            raise ConfigError(f"--prune-ratio {self.prune_ratio}: expected a fraction in [0, 0.9] (as rlrc-export prune)")
        bad = [q for q in self.precisions if q not in QUANT]
        if bad or not self.precisions:
            raise ConfigError(f"--quantize {self.quantize!r}: expected a comma-separated subset of {list(QUANT)}, e.g. int4,int8")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ConfigError(f"--block-size {self.block_size} must be a power of two >= 16 (MatMulNBits)")

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(q for q in self.quantize.replace(" ", "").split(",") if q)


def openvla_7b_config(num_layers: int = 32) -> VLAConfig:
    """OpenVLA-7B's architecture (dinosiglip-vit-so-224px + Llama-2-7B, vocab 32064)."""
    towers = tuple(tower_from_timm_id(t, 224) for t in VISION_BACKBONES["dinosiglip-vit-so-224px"])
    llm = LLMConfig(vocab_size=32064, hidden_size=4096, head_dim=128, num_attention_heads=(32,) * num_layers,
                    num_key_value_heads=(32,) * num_layers, intermediate_size=(11008,) * num_layers, rms_norm_eps=1e-5)
    return VLAConfig(vision_backbone_id="dinosiglip-vit-so-224px", towers=towers, llm=llm)


# --------------------------------------------------------------------------- pieces as graphs


class LayerPiece(nn.Module):
    """One decoder layer over a [1, T, hidden] sequence (causal, RoPE at positions 0..T-1)."""

    def __init__(self, model: OpenVLA, index: int) -> None:
        super().__init__()
        llm = model.config.llm
        self.layer = model.language_model.model.layers[index]
        self.rope = RotaryEmbedding(llm.head_dim, llm.rope_theta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cos, sin = self.rope(torch.arange(x.shape[1]), x.dtype)
        return self.layer(x, cos, sin, 0, None)


class MatMulPiece(nn.Module):
    """x [1, 1, in] @ weight.T: a head or a table as the MatMul a bundle's graph holds."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)  # [out, in]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.weight.t())


def _materialize(module: nn.Module, gen: torch.Generator, std: float = 0.02) -> None:
    """Allocate a meta-built module on the CPU with N(0, std) weights (norm and scale weights 1)."""
    module.to_empty(device="cpu")
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1 and ("norm" in name or "scale_factor" in name):
                p.fill_(1.0)
            else:
                p.normal_(0.0, std, generator=gen)


def _stored_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def measure_graph(module: nn.Module, example: torch.Tensor, name: str, precisions: tuple[str, ...],
                  block_size: int, work: Path) -> dict[str, int]:
    """Export ``module`` to ONNX, quantize it at each precision; stored bytes per precision ('fp32' too)."""
    import onnx

    from export.bundle import save_graphs
    from export.onnx_export import OnnxExportConfig, _export
    from export.quantize_deploy import QuantizeConfig, quantize_graph

    src = work / name / "export"
    src.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        _export(module.eval(), (example,), src / f"{name}.onnx", ["x"], ["out"],
                OnnxExportConfig(exporter="torchscript", check=False), {})
    out: dict[str, int] = {}
    for precision in ("fp32", *precisions):
        dst = work / name / precision
        dst.mkdir(parents=True, exist_ok=True)
        if precision == "fp32":
            graph = onnx.load(str(src / f"{name}.onnx"), load_external_data=True)
        else:
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                graph = quantize_graph(src / f"{name}.onnx", QuantizeConfig(precision=precision, block_size=block_size),
                                       Path(tmp))
        save_graphs(dst, {name: graph}, f"{name}.onnx.data")
        del graph
        out[precision] = _stored_bytes(dst)
        log.info("%s %s: %.1f MiB stored", name, precision, out[precision] / 2**20)
    return out


def measure_table(table: np.ndarray, name: str, precisions: tuple[str, ...], work: Path) -> dict[str, int]:
    """The host embedding table as a bundle stores it: .npy (+ per-row scales) per precision."""
    from rlrc_runtime.embeddings import quantize_rows

    dst = work / name
    dst.mkdir(parents=True, exist_ok=True)
    out = {}
    np.save(dst / "fp32.npy", table)
    out["fp32"] = (dst / "fp32.npy").stat().st_size
    for precision in precisions:
        stored, scale = quantize_rows(table, precision)
        np.save(dst / f"{precision}.npy", stored)
        np.save(dst / f"{precision}_scales.npy", scale)
        out[precision] = (dst / f"{precision}.npy").stat().st_size + (dst / f"{precision}_scales.npy").stat().st_size
    return out


# --------------------------------------------------------------------------- FLOPs from shapes


def _tower_flops(model: OpenVLA) -> int:
    """Multiply-adds x 2 of the towers up to their feature blocks and of the projector, one image."""
    cfg = model.config
    total = 0
    towers = [model.vision_backbone.featurizer] + ([model.vision_backbone.fused_featurizer]
                                                   if cfg.use_fused_vision_backbone else [])
    for tower in towers:
        t = tower.cfg
        n = t.num_patches + t.num_prefix_tokens
        block = sum(p.numel() for name, p in tower.blocks[0].named_parameters() if p.ndim == 2)
        total += (t.feature_block + 1) * (2 * block * n + 4 * n * n * t.embed_dim)
        total += 2 * tower.patch_embed.proj.weight.numel() * t.num_patches
    total += 2 * sum(p.numel() for p in model.projector.parameters() if p.ndim == 2) * cfg.num_patches
    return total


def _layer_flops(shape: Any, tokens: int, context: int) -> int:
    """One decoder layer: matmuls over ``tokens`` positions attending to ``context`` keys on average."""
    h, d = shape.hidden, shape.head_dim
    matmul = (2 * shape.heads + 2 * shape.kv_heads) * d * h + 3 * shape.intermediate * h
    return 2 * matmul * tokens + 4 * tokens * context * shape.heads * d


# --------------------------------------------------------------------------- the report


def _gb(n: float) -> float:
    return n / 1e9


def one_layer(config: VLAConfig) -> VLAConfig:
    """``config`` with a single decoder layer of its first layer's widths."""
    llm = config.llm
    return config.replace(llm=dataclasses.replace(
        llm, num_attention_heads=llm.num_attention_heads[:1], num_key_value_heads=llm.num_key_value_heads[:1],
        intermediate_size=llm.intermediate_size[:1]))


def measure_pieces(cfg: SizeReportConfig, config: VLAConfig, work: Path) -> dict[str, dict[str, Any]]:
    """Build, export and measure every piece of ``config``, one at a time (at most one piece in memory)."""
    from tqdm import tqdm

    from export.prune import PruneConfig, layer_shape, prune_model

    precisions = cfg.precisions
    vision_precisions = tuple(q for q in QUANT if q == "int8" or q in precisions)  # vision is int8 by default
    gen = torch.Generator().manual_seed(cfg.seed)
    pieces: dict[str, dict[str, Any]] = {}
    with torch.device("meta"):
        full = OpenVLA(config)
        one = OpenVLA(one_layer(config))
    bar = tqdm(total=7, desc="size-report pieces", unit="piece")
    # The decoder layer: whole, then pruned in place by the pruner's own rule.
    layer = one.language_model.model.layers[0]
    _materialize(layer, gen)
    x = torch.randn(1, 8, config.llm.hidden_size, generator=gen)
    pieces["decoder_layer_whole"] = {"params": sum(p.numel() for p in layer.parameters()),
                                     "shape": dataclasses.asdict(layer_shape(layer)),
                                     "bytes": measure_graph(LayerPiece(one, 0), x, "layer_whole", precisions,
                                                            cfg.block_size, work)}
    bar.update()
    report = prune_model(one, PruneConfig(ratio=cfg.prune_ratio, method=cfg.method, keep_first=0, keep_last=0,
                                          seed=cfg.seed, progress=False))
    layer = one.language_model.model.layers[0]
    pieces["decoder_layer_pruned"] = {"params": sum(p.numel() for p in layer.parameters()),
                                      "shape": dataclasses.asdict(layer_shape(layer)),
                                      "achieved_ratio": report["achieved_ratio"],
                                      "bytes": measure_graph(LayerPiece(one, 0), x, "layer_pruned", precisions,
                                                             cfg.block_size, work)}
    del one, layer
    bar.update()
    # The towers (to their feature blocks) and the projector.
    towers = [("dinov2_tower" if t.family == "dinov2" else "siglip_tower", t) for t in config.towers]
    for key, tower_cfg in towers:
        with torch.device("meta"):
            piece = type(full.vision_backbone.featurizer)(tower_cfg)
        _materialize(piece, gen)
        stored = sum(p.numel() for p in piece.parameters())
        unused = sum(p.numel() for m in piece.unused_modules() for p in m.parameters())
        s = tower_cfg.image_size
        pieces[key] = {"params": stored - unused, "params_stored_in_checkpoint": stored,
                       "bytes": measure_graph(piece, torch.randn(1, 3, s, s, generator=gen), key, vision_precisions,
                                              cfg.block_size, work)}
        del piece
        bar.update()
    with torch.device("meta"):
        proj = type(full.projector)(config)
    _materialize(proj, gen)
    pieces["projector"] = {"params": sum(p.numel() for p in proj.parameters()),
                           "bytes": measure_graph(proj, torch.randn(1, config.num_patches, config.vision_dim, generator=gen),
                                                  "projector", vision_precisions, cfg.block_size, work)}
    del proj
    bar.update()
    # The tables: host embeddings (per-row quantization), the action-only head and the full lm_head.
    h, vocab, bins = config.llm.hidden_size, config.llm.vocab_size, config.n_action_bins
    table = (torch.randn(vocab, h, generator=gen) * 0.02).numpy()  # [vocab, hidden]
    pieces["embed_tokens"] = {"params": int(table.size), "bytes": measure_table(table, "embed_tokens", precisions, work)}
    first = config.token_vocab_size - bins
    xh = torch.randn(1, 1, h, generator=gen)
    pieces["action_head"] = {"params": bins * h, "bytes": measure_graph(
        MatMulPiece(torch.from_numpy(table[first:first + bins].copy())), xh, "action_head", precisions, cfg.block_size, work)}
    bar.update()
    pieces["full_head"] = {"params": vocab * h, "bytes": measure_graph(
        MatMulPiece(torch.from_numpy(table)), xh, "full_head", precisions, cfg.block_size, work)}
    bar.update()
    bar.close()
    return pieces


def size_report(cfg: SizeReportConfig, config: VLAConfig | None = None, command: str | None = None) -> dict[str, Any]:
    """Measure the pieces of ``config`` (default: OpenVLA-7B), scale them to the full model, write
    STEM.json / STEM.md; returns the report."""
    config = config or openvla_7b_config()
    with torch.device("meta"):
        full = OpenVLA(config)
    base_params = sum(p.numel() for p in full.parameters())
    load = {"before": list(os.getloadavg())}
    owned = cfg.work is None
    work = Path(tempfile.mkdtemp(prefix="size_report_")) if owned else Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        pieces = measure_pieces(cfg, config, work)
    finally:
        if owned:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    out = assemble(cfg, pieces, config.llm.num_layers, base_params, full)
    load["after"] = list(os.getloadavg())
    out.update(command=command, date=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
               machine={"platform": platform.platform(), "cores": os.cpu_count()}, load_average=load)
    write_report(out, cfg.out)
    return out


def assemble(cfg: SizeReportConfig, pieces: dict[str, dict[str, Any]], n_layers: int, base_params: int,
             full: OpenVLA) -> dict[str, Any]:
    """Measured pieces -> full-model bundles (decoder scaled by the layer count) and per-stage bytes/FLOPs."""
    whole, pruned = pieces["decoder_layer_whole"], pieces["decoder_layer_pruned"]
    n_pruned = n_layers - 2  # rlrc-export prune keeps the first and the last layer whole
    vision_keys = ("dinov2_tower", "siglip_tower", "projector")
    base_bytes = 2 * base_params

    def bundle(layer_prec: str, vision_prec: str, pruned_layers: bool, head: str) -> dict[str, Any]:
        layer = pruned if pruned_layers else whole
        parts = {
            "vision": sum(pieces[k]["bytes"][vision_prec] for k in vision_keys),
            "decoder": 2 * whole["bytes"][layer_prec] + n_pruned * layer["bytes"][layer_prec],
            "head": pieces[head]["bytes"][layer_prec],
            "embeddings": pieces["embed_tokens"]["bytes"][layer_prec],
        }
        total = sum(parts.values())
        return {"precision": layer_prec, "vision_precision": vision_prec, "pruned": pruned_layers, "head": head,
                "bytes": parts, "total_bytes": total, "total_gb": _gb(total), "ratio_vs_bf16": base_bytes / total}

    bundles = {"unpruned_fp32_full_head": bundle("fp32", "fp32", False, "full_head")}
    for q in cfg.precisions:
        bundles[f"pruned_{q}"] = bundle(q, "int8", True, "action_head")
        if q == "int4":
            bundles["pruned_int4_vision_int4"] = bundle("int4", "int4", True, "action_head")
        bundles[f"pruned_{q}_full_head"] = bundle(q, "int8", True, "full_head")
    return {
        "schema": SCHEMA,
        "config": dataclasses.asdict(cfg),
        "like": cfg.like,
        "base": {"what": "HF checkpoint in bf16: every parameter of the architecture (unused tower blocks, "
                         "SigLIP's attention pool included) x 2 bytes, computed from the parameter count",
                 "params": base_params, "bytes": base_bytes, "gb": _gb(base_bytes)},
        "paper": {**PAPER, "ratio": PAPER["base_gb"] / PAPER["compressed_gb"]},
        "measured": {"what": "stored bytes of each piece as export.bundle.save_graphs / np.save write them "
                             "(graph + external data, page alignment included), random weights at real widths",
                     "pieces": pieces},
        "scaled": {"what": f"decoder = 2 whole layers + {n_pruned} pruned layers (first and last kept whole, "
                           "as rlrc-export prune does); vision = DINOv2 + SigLIP + projector; head; host embeddings",
                   "decoder_layers": n_layers, "pruned_layers": n_pruned},
        "bundles": bundles,
        "stages": stage_costs(cfg, pieces, full),
    }


def stage_costs(cfg: SizeReportConfig, pieces: dict[str, dict[str, Any]], full: OpenVLA) -> dict[str, Any]:
    """Bytes read and FLOPs per stage of one control step of each compressed bundle (decode: per token).

    The KV cache a decode step reads is counted at 2 bytes per value (fp16 cache, as a GPU build keeps it).
    """
    from export.prune import LayerShape

    config = full.config
    whole = LayerShape(**pieces["decoder_layer_whole"]["shape"])
    pruned = LayerShape(**pieces["decoder_layer_pruned"]["shape"])
    n_pruned = config.llm.num_layers - 2
    t = 1 + config.num_patches + PROMPT_TOKENS
    ctx = t + ACTION_TOKENS // 2
    h = config.llm.hidden_size
    head_flops = 2 * config.n_action_bins * h
    prefill_flops = 2 * _layer_flops(whole, t, t // 2) + n_pruned * _layer_flops(pruned, t, t // 2) + head_flops
    decode_flops = 2 * _layer_flops(whole, 1, ctx) + n_pruned * _layer_flops(pruned, 1, ctx) + head_flops
    kv_bytes = 2 * ctx * whole.head_dim * 2 * (2 * whole.kv_heads + n_pruned * pruned.kv_heads)
    out: dict[str, Any] = {"prompt_tokens": t, "decode_steps": ACTION_TOKENS - 1, "kv_cache_bytes_per_value": 2}
    for q in cfg.precisions:
        vision = sum(pieces[k]["bytes"]["int8"] for k in ("dinov2_tower", "siglip_tower", "projector"))
        llm = (2 * pieces["decoder_layer_whole"]["bytes"][q] + n_pruned * pieces["decoder_layer_pruned"]["bytes"][q]
               + pieces["action_head"]["bytes"][q])
        out[f"pruned_{q}"] = {
            "vision": {"bytes": vision, "flops": _tower_flops(full)},
            "prefill": {"bytes": llm, "flops": prefill_flops},
            "decode_step": {"bytes": llm + kv_bytes, "flops": decode_flops, "kv_cache_bytes": kv_bytes},
        }
    return out


# --------------------------------------------------------------------------- output


def write_report(report: dict[str, Any], stem: str | Path) -> tuple[Path, Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    js, md = stem.with_suffix(".json"), stem.with_suffix(".md")
    js.write_text(json.dumps(report, indent=2) + "\n")
    md.write_text(format_markdown(report))
    return js, md


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def format_markdown(report: dict[str, Any]) -> str:
    base, paper = report["base"], report["paper"]
    pieces = report["measured"]["pieces"]
    precs = ["fp32", *report["config"]["quantize"].split(",")]
    lines = [
        "# OpenVLA-7B bundle size, measured on real-width pieces",
        "",
        f"Command: `{report.get('command') or 'rlrc-export size-report'}`; {report.get('date')}; "
        f"{report['machine']['platform']}, {report['machine']['cores']} cores.",
        "",
        f"**Measured:** {report['measured']['what']}.  ",
        f"**Scaled:** {report['scaled']['what']}.  ",
        f"**Base:** {base['what']}: {base['gb']:.2f} GB ({base['params'] / 1e9:.3f} B parameters).",
        "",
        "## Full-model bundles",
        "",
        "| bundle | vision | decoder | head | host embeddings | total | vs bf16 base |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, b in report["bundles"].items():
        p = b["bytes"]
        lines.append(f"| {name} (vision {b['vision_precision']}) | {_mb(p['vision'])} MB | {_mb(p['decoder'])} MB | "
                     f"{_mb(p['head'])} MB | {_mb(p['embeddings'])} MB | **{b['total_gb']:.3f} GB** | "
                     f"**{b['ratio_vs_bf16']:.2f}x** |")
    lines += [
        "",
        f"Paper ({paper['source']}): {paper['base_gb']} GB -> {paper['compressed_gb']} GB ({paper['ratio']:.2f}x).",
        "",
        "## Measured pieces (stored bytes)",
        "",
        "| piece | parameters | " + " | ".join(precs) + " |",
        "|---|---|" + "---|" * len(precs),
    ]
    for name, piece in pieces.items():
        extra = ""
        if "shape" in piece:
            s = piece["shape"]
            extra = f" (heads {s['heads']}, kv {s['kv_heads']}, MLP {s['intermediate']})"
        lines.append(f"| {name}{extra} | {piece['params'] / 1e6:,.2f} M | "
                     + " | ".join(f"{_mb(piece['bytes'][q])} MB" for q in precs) + " |")
    lines += ["", "## Per stage of one control step (for `rlrc-bench --project`)", "",
              "| bundle | stage | weight + cache bytes read | GFLOPs |", "|---|---|---|---|"]
    for name, stages in report["stages"].items():
        if not isinstance(stages, dict):
            continue
        for stage, v in stages.items():
            lines.append(f"| {name} | {stage} | {_mb(v['bytes'])} MB | {v['flops'] / 1e9:,.1f} |")
    lines.append("")
    return "\n".join(lines)

