"""Which weight precision is fastest for one decoder MatMul on this CPU, by rows of input?

    python research/matmul_kernels.py [--k 1024 --n 2816] [--rows 1,280] [--threads 2]

One [K, N] fp32 weight (N(0, 0.02)), exported as a single-MatMul ONNX graph and quantized the ways
`rlrc-export quantize` can: dynamic int8 per channel (MatMulInteger) and 4-bit weight-only
MatMulNBits at accuracy_level 0 (fp32 compute) and 4 (int8 compute) for block sizes 32/64/128.
Every variant runs in ONNX Runtime on the CPU, interleaved, for M = 1 (a decode step) and M = 280
(a prefill of 256 patches plus the prompt); the report gives the median ms, the speed relative to
dynamic int8 and the largest output difference from fp32. Defaults are the `mid` preset's MLP.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlrc_runtime.cli_args import run_command
from rlrc_runtime.errors import ConfigError


@dataclass(frozen=True)
class KernelsConfig:
    k: int = field(default=1024, metadata={"help": "input features (hidden size)"})
    n: int = field(default=2816, metadata={"help": "output features (MLP width)"})
    rows: str = field(default="1,280", metadata={"help": "comma-separated input rows M to time"})
    threads: int = field(default=2, metadata={"help": "ONNX Runtime intra-op threads"})
    rounds: int = field(default=0, metadata={"help": "interleaved rounds per M; 0 = 200 for M=1, 20 otherwise"})

    def __post_init__(self) -> None:
        if self.k % 16 or self.k <= 0 or self.n <= 0:
            raise ConfigError(f"--k {self.k} --n {self.n}: both must be positive and K a multiple of 16 (MatMulNBits)")
        try:
            rows = [int(r) for r in self.rows.split(",")]
        except ValueError:
            raise ConfigError(f"--rows {self.rows!r} must be comma-separated integers, e.g. 1,280") from None
        if not rows or min(rows) < 1:
            raise ConfigError(f"--rows {self.rows!r}: every M must be >= 1")


def _graphs(cfg: KernelsConfig, work: Path) -> dict[str, Path]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    weight = (np.random.default_rng(0).standard_normal((cfg.k, cfg.n)) * 0.02).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", cfg.k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", cfg.n])],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    paths = {"fp32": work / "fp32.onnx", "int8_dynamic": work / "int8.onnx"}
    onnx.save(model, paths["fp32"])
    quantize_dynamic(paths["fp32"], paths["int8_dynamic"], weight_type=QuantType.QInt8, per_channel=True)
    for acc in (0, 4):
        for block in (32, 64, 128):
            quant = MatMulNBitsQuantizer(onnx.load(paths["fp32"]), bits=4, block_size=block, is_symmetric=True,
                                         accuracy_level=acc)
            quant.process()
            name = f"int4_acc{acc}_block{block}"
            paths[name] = work / f"{name}.onnx"
            quant.model.save_model_to_file(str(paths[name]), False)
    return paths


def run(cfg: KernelsConfig) -> str:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        paths = _graphs(cfg, Path(tmp))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = cfg.threads
        sessions = {name: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
                    for name, p in paths.items()}
    rng = np.random.default_rng(1)
    lines = [f"# One MatMul [{cfg.k} x {cfg.n}], ONNX Runtime {ort.__version__}, {cfg.threads} threads, "
             f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before", ""]
    for m in (int(r) for r in cfg.rows.split(",")):
        x = rng.standard_normal((m, cfg.k)).astype(np.float32)
        outputs = {name: s.run(None, {"x": x})[0] for name, s in sessions.items()}  # also the warm-up
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(cfg.rounds or (200 if m == 1 else 20)):
            for name, s in sessions.items():
                t0 = time.perf_counter()
                s.run(None, {"x": x})
                times[name].append((time.perf_counter() - t0) * 1e3)
        ref = float(np.median(times["int8_dynamic"]))
        lines += [f"## M = {m}", "", "| weights | median ms | x int8 dynamic | max abs diff vs fp32 |", "|---|---|---|---|"]
        for name, ts in times.items():
            med = float(np.median(ts))
            diff = float(np.abs(outputs[name] - outputs["fp32"]).max())
            lines.append(f"| {name} | {med:.3f} | {ref / med:.2f} | {diff:.4f} |")
        lines.append("")
    lines.append(f"load average {os.getloadavg()[0]:.2f} after")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_command("matmul_kernels", __doc__, KernelsConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
