"""Deployment quantization of a bundle's LLM graphs with onnxruntime.quantization.

Two verbs, as gpt-fast: ``quantize_bundle`` writes a new bundle whose prefill and decode graphs
hold quantized weights; the runtime loads it like any other (ONNX Runtime picks the kernels).

- **int8**: dynamic quantization (``quantize_dynamic``): int8 weights per output channel, activations
  quantized per call (DynamicQuantizeLinear + MatMulInteger / DynamicQuantizeMatMul). Only
  MatMuls with a constant weight are touched (``MatMulConstBOnly``), never attention's Q·Kᵀ.
- **int4**: weight-only block quantization (``MatMulNBitsQuantizer`` -> ``MatMulNBits``), blocks of
  ``block_size`` input channels with one scale each; ``accuracy_level=4`` lets the CPU kernel
  compute with int8 activations.

The vision graph stays in its exported precision unless ``quantize_vision`` is set: it runs once
per action, the LLM runs 7 times (design.md §5), and the towers are the part most sensitive to
quantization, so whether quantizing it is worth it is measured, not assumed. Every quantized
artifact must be benchmarked (`rlrc-bench --compare`), never assumed fast: the RLRC paper's
NF4 made latency worse.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from export.bundle import (abandon_out, copy_bundle_except, graph_spec, prepare_out, save_graphs, stage_record,
                           tool_versions, write_bundle)
from rlrc_runtime.embeddings import dequantize_rows, quantize_rows
from rlrc_runtime.errors import ConfigError
from rlrc_runtime.manifest import LLMSpec, read_manifest

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class QuantizeConfig:
    """How `rlrc-export quantize` rewrites the LLM graphs of an fp32 bundle."""

    precision: str = field(metadata={"help": "int8 (dynamic) or int4 (weight-only MatMulNBits)", "choices": ["int8", "int4"]})
    """'int8' or 'int4'."""
    block_size: int = field(default=32, metadata={"help": "int4: input channels per quantization block (power of 2, >= 16)"})
    """int4 block size; smaller blocks are more accurate and slightly larger."""
    symmetric: bool = field(default=True, metadata={"help": "int4: symmetric blocks (no zero points)"})
    """int4: symmetric quantization."""
    accuracy_level: int = field(default=4, metadata={"help": "int4: MatMulNBits accuracy_level (4 = int8 compute on CPU, 0 = fp32)"})
    """int4: the lowest compute precision MatMulNBits may use (0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8)."""
    per_channel: bool = field(default=True, metadata={"help": "int8: one scale per output channel"})
    """int8: per-channel weight scales."""
    quantize_head: bool = field(default=True, metadata={"help": "also quantize lm_head"})
    """Whether lm_head's MatMul is quantized (it is the largest single weight at 7B: 32064 x 4096)."""
    head_bits: int = field(default=8, metadata={
        "help": "int4: bits of the lm_head MatMul: 8 (dynamic int8, per channel) or 4 (MatMulNBits like the "
                "decoder). 4-bit logits flip the argmax over 256 bins often; the action-only head is a tiny "
                "share of the bytes", "choices": [4, 8]})
    """int4 bundles: precision of the head (the decoder is 4-bit either way)."""
    quantize_vision: bool = field(default=False, metadata={
        "help": "also quantize the vision graph's MatMuls (towers + projector) at --precision; the patch "
                "embedding convolutions stay float"})
    """Whether vision.onnx is quantized too (it stays fp32 by default: it runs once per action)."""
    embed_precision: str = field(default="auto", metadata={
        "help": "storage of the host text-embedding table: auto (= --precision), none (keep it as exported), "
                "int8 or int4 (per-row scales)", "choices": ["auto", "none", "int8", "int4"]})
    """Quantization of the host embedding table (rlrc_runtime.embeddings); 'auto' follows ``precision``."""

    def __post_init__(self) -> None:
        if self.precision not in ("int8", "int4"):
            raise ConfigError(f"precision={self.precision!r}; quantize writes 'int8' or 'int4' (fp16 comes from `rlrc-export onnx --precision fp16`)")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ConfigError(f"block_size={self.block_size} must be a power of two >= 16 (MatMulNBits)")
        if self.head_bits not in (4, 8):
            raise ConfigError(f"head_bits={self.head_bits} must be 4 or 8")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise ConfigError(f"accuracy_level={self.accuracy_level} must be 0..4")
        if self.embed_precision not in ("auto", "none", "int8", "int4"):
            raise ConfigError(f"embed_precision={self.embed_precision!r}; expected auto, none, int8 or int4")

    @property
    def embed_quant(self) -> str:
        return self.precision if self.embed_precision == "auto" else self.embed_precision


def _head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul(s) producing the logits (excluded when quantize_head is off)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    names, stack, seen = [], ["logits"], set()
    while stack:  # walk back from 'logits' through casts/slices to the first MatMul
        node = producers.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "MatMul":
            names.append(node.name)
            continue
        stack.extend(node.input)
    return names


def quantize_graph(model_path: Path, cfg: QuantizeConfig, work: Path) -> onnx.ModelProto:
    """One graph file (with its external data) -> quantized ModelProto with data in memory."""
    model = onnx.load(str(model_path), load_external_data=True)
    head = _head_nodes(model)
    scopes = {n.name: [(p.key, p.value) for p in n.metadata_props] for n in model.graph.node if n.metadata_props}
    return _keep_scopes(_quantize(model, model_path, cfg, work, head), scopes)


def _keep_scopes(model: onnx.ModelProto, scopes: dict[str, list[tuple[str, str]]]) -> onnx.ModelProto:
    """Copy each original node's metadata (the exporter's module scope, e.g. 'layers.3.mlp.up_proj') onto
    the nodes the quantizer made from it (named after it: NAME_Q4, NAME_quant, ...), so tools can still
    tell which part of the model a quantized weight belongs to."""
    names = sorted(scopes, key=len, reverse=True)
    for node in model.graph.node:
        if node.metadata_props or not node.name:
            continue
        src = next((n for n in names if node.name.startswith(n + "_")), None)
        for key, value in scopes.get(src, []):
            node.metadata_props.add(key=key, value=value)
    return model


def _quantize(model: onnx.ModelProto, model_path: Path, cfg: QuantizeConfig, work: Path,
              head: list[str]) -> onnx.ModelProto:
    if cfg.precision == "int8":
        return _int8(model, model_path.stem, cfg, work, exclude=[] if cfg.quantize_head else head)
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    four_bit_head = cfg.quantize_head and cfg.head_bits == 4
    quant = MatMulNBitsQuantizer(model, bits=4, block_size=cfg.block_size, is_symmetric=cfg.symmetric,
                                 accuracy_level=cfg.accuracy_level, nodes_to_exclude=[] if four_bit_head else head,
                                 op_types_to_quantize=("MatMul",))
    quant.process()
    model = quant.model.model
    if cfg.quantize_head and not four_bit_head and head:
        model = _int8(model, model_path.stem + ".head", cfg, work, only=head)
    return model


def _int8(model: onnx.ModelProto, stem: str, cfg: QuantizeConfig, work: Path, exclude: list[str] | None = None,
          only: list[str] | None = None) -> onnx.ModelProto:
    """Dynamic int8 of the MatMuls with constant weights (``only`` these nodes, or all but ``exclude``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = work / f"{stem}.src.onnx"
    onnx.save_model(model, str(src), save_as_external_data=True, location=f"{stem}.src.data")
    dst = work / f"{stem}.int8.onnx"
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=cfg.per_channel,
                     op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude or [], nodes_to_quantize=only or [],
                     use_external_data_format=True, extra_options={"MatMulConstBOnly": True})
    return onnx.load(str(dst), load_external_data=True)


def quantize_bundle(bundle: str | Path, out: str | Path, cfg: QuantizeConfig, overwrite: bool = False,
                    command: str | None = None) -> Path:
    """fp32 bundle -> new bundle with int8/int4 LLM graphs (vision, tokenizer, tables copied)."""
    bundle, out = Path(bundle), Path(out)
    manifest = read_manifest(bundle, verify=True)
    if manifest.precision != "fp32":
        raise ConfigError(
            f"{bundle} has {manifest.precision} LLM graphs; quantization starts from an fp32 bundle "
            f"(rlrc-export onnx --precision fp32 ...), not from a {manifest.precision} one"
        )
    tmp = prepare_out(out, overwrite)
    try:
        llm_graphs = manifest.llm_graphs
        names = (*llm_graphs, "vision") if cfg.quantize_vision else llm_graphs
        graphs: dict[str, onnx.ModelProto] = {}
        with tempfile.TemporaryDirectory() as work_dir:
            for name in names:
                log.info("quantizing %s to %s", manifest.graphs[name].file, cfg.precision)
                graphs[name] = quantize_graph(bundle / manifest.graphs[name].file, cfg, Path(work_dir))
        data_files = {n: "llm.onnx.data" for n in llm_graphs}
        weight_bytes = save_graphs(tmp, {n: graphs[n] for n in llm_graphs}, "llm.onnx.data")
        if cfg.quantize_vision:
            data_files["vision"] = "vision.onnx.data"
            weight_bytes.update(save_graphs(tmp, {"vision": graphs["vision"]}, "vision.onnx.data"))
        skip = {manifest.graphs[n].file for n in names} | {f for n in names for f in manifest.graphs[n].data_files}
        llm = manifest.llm
        if llm.embeddings == "host" and cfg.embed_quant != "none" and llm.embed_quant == "none":
            llm = _quantize_embeddings(bundle, tmp, llm, cfg.embed_quant)
            skip.add(manifest.llm.embed_file)
        copy_bundle_except(bundle, tmp, skip)
        specs = dict(manifest.graphs)
        for name in names:
            specs[name] = graph_spec(graphs[name], f"{name}.onnx", cfg.precision, (data_files[name],), weight_bytes[name])
            if specs[name].inputs != manifest.graphs[name].inputs:
                raise ConfigError(f"quantizing {name}.onnx changed its inputs; this is a bug in the quantizer settings")
        record = stage_record("quantize", cfg, command or f"rlrc-export quantize --bundle {bundle} --out {out} "
                              f"--precision {cfg.precision}", source=str(bundle.resolve()))
        new = dataclasses.replace(manifest, graphs=specs, llm=llm, stages=(*manifest.stages, record), engines={},
                                  versions={**manifest.versions, **tool_versions()})
        out = write_bundle(tmp, out, new)
    except BaseException:
        abandon_out(tmp, out)
        raise
    before = max(manifest.graphs[n].weight_bytes for n in manifest.llm_graphs)  # one stored copy serves them all
    after = max(specs[n].weight_bytes for n in manifest.llm_graphs)
    log.info("wrote %s: LLM weights %.1f MiB -> %.1f MiB (%s)", out, before / 2**20, after / 2**20, cfg.precision)
    return out


def _quantize_embeddings(bundle: Path, out_dir: Path, llm: LLMSpec, quant: str) -> LLMSpec:
    """Write the host table of ``bundle`` quantized per row into ``out_dir``; the updated llm section."""
    table = np.load(bundle / llm.embed_file)
    stored, scale = quantize_rows(table, quant)
    embed_file, scale_file = f"embed_tokens.{quant}.npy", "embed_scales.npy"
    np.save(out_dir / embed_file, stored)
    np.save(out_dir / scale_file, scale)
    err = float(np.abs(dequantize_rows(stored, scale, quant) - table).max())
    log.info("host embeddings %s: %.1f MiB -> %.1f MiB (max abs error %.2e)", quant, table.nbytes / 2**20,
             (stored.nbytes + scale.nbytes) / 2**20, err)
    return dataclasses.replace(llm, embed_file=embed_file, embed_quant=quant, embed_scale_file=scale_file)
