"""`rlrc-export engine`: build TensorRT engines from a bundle's ONNX graphs, on the target device.

UNVERIFIED here: no GPU was available when this was written (tests marked ``gpu`` skip).

Engines are specific to the TensorRT version and the GPU architecture, so they are built where
they run (``rlrc-export engine --bundle B`` on the Jetson) and the manifest records both; the
runtime refuses engines built elsewhere. A timing cache (``engines/timing.cache``) makes rebuilds
on the same device fast. Build as a chain of small steps (Polygraphy style): parse -> config ->
profiles -> build -> serialize, logging every engine input/output.

Precisions: 'fp16' (builder flag), 'int8'/'fp8'/'int4' from explicit Q/DQ or weight-only nodes in
the graphs (a quantized ONNX, e.g. from NVIDIA ModelOpt; TensorRT then honours the Q/DQ
placement), 'fp32' otherwise. ONNX Runtime's own contrib ops (MatMulNBits, MatMulInteger) are not
TensorRT ops: build engines from an fp32/fp16 bundle or a Q/DQ-quantized one.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from export.bundle import exclusive_out, now_iso, private_dir, stage_record, write_bundle
from rlrc_runtime.errors import BackendError, ConfigError
from rlrc_runtime.manifest import EngineSpec, read_manifest, write_manifest

log = logging.getLogger(__name__)

ENGINE_PRECISIONS = ("fp32", "fp16", "int8", "fp8", "int4")
ORT_ONLY_OPS = {"MatMulNBits", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}


@dataclass(frozen=True)
class EngineConfig:
    """How `rlrc-export engine` builds TensorRT engines for this device."""

    precision: str = field(default="fp16", metadata={"help": "builder precision", "choices": list(ENGINE_PRECISIONS)})
    """'fp16' enables FP16 kernels; 'int8'/'fp8'/'int4' need explicit Q/DQ (or weight-only) nodes in the graph."""
    workspace_gib: float = field(default=4.0, metadata={"help": "builder workspace limit in GiB"})
    """Scratch memory the builder may use while timing tactics."""
    opt_prompt_tokens: int = field(default=24, metadata={"help": "prompt length the prefill profile is tuned for"})
    """Prefill's optimization profile: min 1 + P + 2, opt 1 + P + this, max S_max - 1."""
    device: int = field(default=0, metadata={"help": "CUDA device index"})
    """GPU that builds (and will run) the engines."""
    builder_optimization_level: int = field(default=3, metadata={"help": "TensorRT builder optimization level 0-5"})
    """Higher levels search more tactics (slower builds, sometimes faster engines)."""

    def __post_init__(self) -> None:
        if self.precision not in ENGINE_PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}; choose one of {ENGINE_PRECISIONS}")
        if self.workspace_gib <= 0:
            raise ConfigError(f"workspace_gib={self.workspace_gib} must be > 0")
        if not 0 <= self.builder_optimization_level <= 5:
            raise ConfigError(f"builder_optimization_level={self.builder_optimization_level} must be 0..5")


def build_engines(bundle: str | Path, cfg: EngineConfig = EngineConfig(), command: str | None = None) -> Path:
    """Build vision/prefill/decode engines into ``bundle/engines/`` and record them in the manifest.

    Holds the bundle's export lock; the engines are built in a private directory beside the bundle
    and moved in with the new manifest, so an interrupted build leaves the bundle as it was.
    """
    with exclusive_out(Path(bundle)):
        staging = private_dir(Path(bundle), "engines")
        try:
            return _build_engines(Path(bundle), cfg, command, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _build_engines(bundle: Path, cfg: EngineConfig, command: str | None, staging: Path) -> Path:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError("building engines needs TensorRT on this machine: pip install 'rlrc_runtime[tensorrt]'") from exc
    from rlrc_runtime.backends.tensorrt import cudart_module, device_facts

    manifest = read_manifest(bundle, verify=True)
    if manifest.llm.decoding == "parallel":
        raise ConfigError(f"{bundle} decodes action chunks in parallel; its chunk graph runs in ONNX Runtime's TensorRT "
                          "execution provider (backend 'onnxruntime', device 'tensorrt'), not as rlrc engines")
    if manifest.llm.embeddings != "host":
        raise ConfigError(f"{bundle} was exported with --embeddings graph; TensorRT engines expect --embeddings host")
    import onnx

    for name in ("prefill", "decode"):
        ops = {n.op_type for n in onnx.load(str(bundle / manifest.graphs[name].file), load_external_data=False).graph.node}
        if ops & ORT_ONLY_OPS:
            raise ConfigError(
                f"{bundle / manifest.graphs[name].file} uses ONNX Runtime-only ops {sorted(ops & ORT_ONLY_OPS)} "
                f"({manifest.precision} from `rlrc-export quantize`); build engines from the fp32/fp16 bundle "
                "with --precision fp16, or from a Q/DQ-quantized graph"
            )
    cudart_module()  # fail early with the install hint
    cc, device_name = device_facts(cfg.device)
    logger = trt.Logger(trt.Logger.INFO)
    cache_path = staging / "timing.cache"
    if (bundle / "engines" / "timing.cache").is_file():  # earlier builds on this device make this one fast
        shutil.copy2(bundle / "engines" / "timing.cache", cache_path)
    config_h = manifest.vla_config()
    P, H, S = config_h.num_patches, config_h.llm.hidden_size, manifest.llm.max_seq_len
    engines = {}
    for name in ("vision", "prefill", "decode"):
        start = time.perf_counter()
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(bundle / manifest.graphs[name].file)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"TensorRT could not parse {manifest.graphs[name].file}: {errors}")
        bconf = builder.create_builder_config()
        bconf.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gib * 2**30))
        bconf.builder_optimization_level = cfg.builder_optimization_level
        if cfg.precision in ("fp16", "int8", "fp8", "int4"):
            bconf.set_flag(trt.BuilderFlag.FP16)
        if cfg.precision == "int8":
            bconf.set_flag(trt.BuilderFlag.INT8)
        if cfg.precision == "fp8":
            bconf.set_flag(trt.BuilderFlag.FP8)
        if cfg.precision == "int4" and hasattr(trt.BuilderFlag, "INT4"):
            bconf.set_flag(trt.BuilderFlag.INT4)
        cache = bconf.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        bconf.set_timing_cache(cache, ignore_mismatch=False)
        if name == "prefill":
            profile = builder.create_optimization_profile()
            profile.set_shape("inputs_embeds", (1, P + 2, H), (1, P + cfg.opt_prompt_tokens, H), (1, S - 1, H))
            bconf.add_optimization_profile(profile)
        for i in range(network.num_inputs):
            t = network.get_input(i)
            log.info("%s input  %-16s %s %s", name, t.name, tuple(t.shape), t.dtype)
        for i in range(network.num_outputs):
            t = network.get_output(i)
            log.info("%s output %-16s %s %s", name, t.name, tuple(t.shape), t.dtype)
        serialized = builder.build_serialized_network(network, bconf)
        if serialized is None:
            raise BackendError(f"TensorRT failed to build the {name} engine (see the TensorRT log above)")
        rel = f"engines/{name}.plan"
        (staging / f"{name}.plan").write_bytes(bytes(serialized))
        cache_path.write_bytes(bytes(bconf.get_timing_cache().serialize()))
        engines[name] = EngineSpec(file=rel, graph=name, tensorrt_version=trt.__version__, compute_capability=cc,
                                   device_name=device_name, precision=cfg.precision,
                                   timing_cache="engines/timing.cache")
        log.info("built %s in %.1f s (%.1f MiB)", rel, time.perf_counter() - start,
                 (staging / f"{name}.plan").stat().st_size / 2**20)
    record = stage_record("engine", cfg, command or f"rlrc-export engine --bundle {bundle} --precision {cfg.precision}",
                          device=device_name, compute_capability=cc, tensorrt=trt.__version__)
    new = dataclasses.replace(manifest, engines=engines, stages=(*manifest.stages, record),
                              versions={**manifest.versions, "tensorrt": trt.__version__}, created=now_iso())
    if (bundle / "engines").exists():
        shutil.rmtree(bundle / "engines")
    os.replace(staging, bundle / "engines")
    write_manifest(bundle, new)
    return bundle


__all__ = ["EngineConfig", "build_engines", "write_bundle"]
