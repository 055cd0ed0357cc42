"""``rlrc-export``: the export toolchain's command line (one subcommand per stage)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field

from rlrc_runtime.cli_args import add_arguments, from_namespace
from rlrc_runtime.errors import RLRCError

log = logging.getLogger("rlrc-export")


@dataclass(frozen=True)
class MakeTinyArgs:
    out: str = field(metadata={"help": "output checkpoint directory"})
    preset: str = field(default="tiny", metadata={"help": "model preset; see --list"})
    seed: int = field(default=0, metadata={"help": "random seed of the weights"})
    dtype: str = field(default="float32", metadata={"help": "stored dtype", "choices": ["float32", "bfloat16", "float16"]})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing checkpoint at --out"})


@dataclass(frozen=True)
class InspectArgs:
    checkpoint: str = field(metadata={"help": "checkpoint directory", "positional": True})
    json: bool = field(default=False, metadata={"help": "print JSON instead of a summary"})


def cmd_make_tiny(args: MakeTinyArgs) -> None:
    from export.tiny import make_tiny, parameter_summary, preset_config, get_preset

    out = make_tiny(args.out, preset=args.preset, seed=args.seed, dtype=args.dtype, overwrite=args.overwrite)
    counts = parameter_summary(preset_config(get_preset(args.preset)))
    print(f"wrote {out} (preset {args.preset!r}: {counts['total'] / 1e6:.2f} M parameters, "
          f"LLM {counts['llm'] / 1e6:.2f} M)")


def cmd_inspect(args: InspectArgs) -> None:
    from export.tiny import parameter_summary
    from rlrc_runtime.checkpoint import read_checkpoint

    info = read_checkpoint(args.checkpoint, require_norm_stats=False)
    cfg = info.config
    summary = {
        "path": str(info.path),
        "vision_backbone_id": cfg.vision_backbone_id,
        "image_size": cfg.image_size,
        "patches": cfg.num_patches,
        "towers": [{"timm_id": t.timm_id, "embed_dim": t.embed_dim, "depth": t.depth} for t in cfg.towers],
        "llm": {
            "hidden_size": cfg.llm.hidden_size,
            "layers": cfg.llm.num_layers,
            "num_attention_heads": list(cfg.llm.num_attention_heads),
            "num_key_value_heads": list(cfg.llm.num_key_value_heads),
            "intermediate_size": list(cfg.llm.intermediate_size),
        },
        "parameters": parameter_summary(cfg),
        "weight_bytes": sum(_numel(t.shape) * _DTYPE_BYTES.get(t.dtype, 4) for t in info.tensors.values()),
        "shards": info.files,
        "tokenizer": info.tokenizer_file.name,
        "norm_stats_keys": sorted(cfg.norm_stats or {}),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    p, llm = summary["parameters"], summary["llm"]
    print(f"checkpoint   {summary['path']}")
    print(f"vision       {cfg.vision_backbone_id}, {cfg.image_size} px, {cfg.num_patches} patches, "
          + " + ".join(f"{t['timm_id'].split('.')[0]} (d={t['embed_dim']}, depth {t['depth']})" for t in summary["towers"]))
    print(f"llm          {llm['layers']} layers, hidden {llm['hidden_size']}, heads {llm['num_attention_heads']}, "
          f"kv heads {llm['num_key_value_heads']}, mlp {llm['intermediate_size']}")
    print(f"parameters   total {p['total'] / 1e6:.2f} M (vision {p['vision'] / 1e6:.2f} M, projector "
          f"{p['projector'] / 1e6:.2f} M, llm {p['llm'] / 1e6:.2f} M); {summary['weight_bytes'] / 2**20:.1f} MiB stored")
    print(f"files        {', '.join(summary['shards'])}; tokenizer {summary['tokenizer']}")
    print(f"norm_stats   {summary['norm_stats_keys'] or 'none'}")


_DTYPE_BYTES = {"F32": 4, "BF16": 2, "F16": 2, "I8": 1, "U8": 1, "I64": 8, "I32": 4, "BOOL": 1}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlrc-export", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make-tiny", help="write a small OpenVLA-format checkpoint with random weights")
    add_arguments(p, MakeTinyArgs)
    p.set_defaults(run=cmd_make_tiny, args_cls=MakeTinyArgs)
    p = sub.add_parser("presets", help="list the make-tiny presets")
    p.set_defaults(run=None, args_cls=None)
    p = sub.add_parser("inspect", help="print a checkpoint's dimensions, parameter counts and files")
    add_arguments(p, InspectArgs)
    p.set_defaults(run=cmd_inspect, args_cls=InspectArgs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if ns.command == "presets":
            from export.tiny import PRESETS

            for name, preset in PRESETS.items():
                print(f"{name:12s} {preset.description}")
            return 0
        ns.run(from_namespace(ns.args_cls, ns))
    except RLRCError as exc:
        print(f"rlrc-export {ns.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
