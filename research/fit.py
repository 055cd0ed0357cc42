"""Can a from-scratch model learn the binding at all? Train it for minutes on one sub-task and score it.

    python -m research.fit binding --data STACK_DEMOS [--steps 800 --every 100 --pairs 32 --lr 7e-4] [--json F]
        [--preset base-128 --override '{"hidden_size": 256, "head_dim": 64}' --embed-std 0.5] [--one-colour]
        [--attn-sup 1.0] [--attn-role 1.0 --attn-role-tokens 2]
    python -m research.fit score --checkpoint CKPT --data STACK_DEMOS [--json F]
    python -m research.fit grounding --data DEMOS [--steps 1000 --every 200] [--target hand] [--attn-sup 1.0] ...

A few minutes per question on 2 cores instead of an hour of policy training.

``binding``: every batch is ``--pairs`` counterfactual pairs (sim/recipes/counterfactual.py) of stack
demos: an untouched frame with its own instruction and action, and the same frame with the two colours
swapped and the expert's action for that. Nothing else is trained, so the only way to lower the loss
on a pair is to act on the named block. The model is ``--preset`` from scratch (with ``--override``
fields, to see which dimensions bind), with HL-Gauss targets (2 bins), sine-cosine position init and
6-px shifts. Frame rows split the pairs: the first 85 % train, the rest are held out. Every ``--every``
steps, on 128 fixed training pairs and 128 held-out ones, the first two action tokens (dx, dy) are
decoded greedily (teacher-forced) for both rows of a pair, and a row is right when they are nearer (L1,
in bins) its own label than the other row's:

    own / swapped   share right under the recorded / the swapped instruction
    both            share of pairs right under both (the action follows the words)

A model that ignores the words gives the same tokens for both rows: own + swapped near 1, both near 0.
dy is predicted after the *label's* dx (teacher forcing), so dx_own / dx_swapped / dx_both score the first
token alone, on the pairs whose dx labels differ. ``--attn-sup`` adds the colour-word attention term
(research/attn_sup.py: colour word -> patches of that colour) and ``--attn-role`` the recipe's role term
(sim/recipes/attention.py: the position predicting the first action tokens -> the block to move and the
block it goes on, each row of a pair with its own roles).

``score``: the same pair scores for a trained checkpoint (e.g. the pair stage of
benchmarks/base_policy.sh), on the pairs a ``binding`` fit on the same data scores, without training.

``grounding``: how fast does a from-scratch model learn "where is the {colour} {object}?" The model
(base-128's dimensions, or ``--layers``/``--hidden``/``--mlp``/``--tower`` variants) is trained on grounding
questions only (sim/recipes/grounding.py) from the first ``--demos`` demos of ``--data``; 15 % of frames are
held out. Printed every ``--every`` steps: mean absolute error in cm of the four answer values (object
x, y; object minus hand x, y), teacher-forced, on held-out questions and on first frames only. Answer
tokens 3-4 see tokens 1-2 (teacher forcing), so only the first two measure localisation.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from export.demos import DemoReader
from export.model import OpenVLA, init_weights
from export.tiny import TinyPreset, get_preset, preset_config
from export.tokenizer_gen import write_tokenizer
from export.train.data import Batch, Collator, DemoSteps, load_demos
from export.train.loop import param_groups
from export.train.sft import ActionLoss, demo_collator
from rlrc_runtime.cli_args import Subcommand, run_subcommands
from rlrc_runtime.errors import ConfigError
from rlrc_runtime.transforms import Transforms
from sim.recipes.grounding import ANSWER_RANGES, QUERY_TEMPLATE, demo_queries, normalise_answer
from sim.recipes.tabletop import TabletopRecipe, TabletopRecipeConfig
from sim.tasks import COLOUR_NAMES, COLOURS
from research.report import Started, command_line, write_report

PROG = "research.fit"
SHIFT = 6
"""Random image shift of every training batch, pixels (the recipe's)."""


# --------------------------------------------------------------------------- shared


def new_model(preset: TinyPreset, seed: int, sincos: bool = True,
              embed_std: float | None = None) -> tuple[OpenVLA, Transforms]:
    """A from-scratch model of ``preset`` (norm_stats set later) and its transforms, as rlrc-train builds them."""
    config = preset_config(preset, norm_stats={})
    model = OpenVLA(config)
    init_weights(model, seed=seed, sincos_pos=sincos, embed_std=embed_std)
    with tempfile.TemporaryDirectory() as tok_dir:  # the tokenizer is read into memory
        write_tokenizer(Path(tok_dir), model_max_length=config.llm.max_position_embeddings)
        transforms = Transforms.for_new_model(config, tok_dir)
    return model, transforms


def train_steps(model: OpenVLA, loss_fn: Callable[[int], tuple[torch.Tensor, dict[str, torch.Tensor]]],
                args: "FitArgs", on_score: Callable[[int, dict[str, torch.Tensor]], None],
                extra_params: list[torch.nn.Parameter] | None = None) -> None:
    """AdamW (the trainer's groups, betas, clip 1.0), linear warm-up then a flat ``args.lr``; ``loss_fn(step)``
    gives one step's loss, ``on_score(step, stats)`` runs every ``args.every`` steps and at the end."""
    groups = param_groups(model, 0.01) + ([{"params": extra_params, "weight_decay": 0.0}] if extra_params else [])
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    for step in range(1, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, step / args.warmup_steps)
        opt.zero_grad(set_to_none=True)
        loss, stats = loss_fn(step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % args.every == 0 or step == args.steps:
            on_score(step, stats)


def _json_arg(name: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--{name}={text!r} is not JSON ({exc.msg}); e.g. '{{\"hidden_size\": 256}}'") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--{name}={text!r} must be a JSON object of field: value")
    return value


@dataclass(frozen=True, kw_only=True)
class FitArgs:
    data: str = field(metadata={"help": "demo file(s) written by `rlrc-sim demos`, comma-separated"})
    steps: int = field(default=800, metadata={"help": "optimizer steps"})
    every: int = field(default=100, metadata={"help": "score every N steps"})
    lr: float = field(default=7e-4, metadata={"help": "peak learning rate (flat after the warm-up)"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    seed: int = field(default=0, metadata={"help": "init and sampling seed"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads"})
    json: str | None = field(default=None, metadata={"help": "write the scores here"})

    def __post_init__(self) -> None:
        for name in ("steps", "every", "warmup_steps", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}={getattr(self, name)} must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"--lr={self.lr} must be > 0")

    @property
    def files(self) -> list[str]:
        return [p for p in self.data.split(",") if p]


# --------------------------------------------------------------------------- binding: counterfactual pairs


def one_colour(instruction: str) -> str:
    """``instruction`` with its second colour word (sim.tasks.COLOUR_NAMES) replaced by 'other'."""
    words = instruction.split(" ")
    at = [i for i, w in enumerate(words) if w in COLOUR_NAMES]
    if len(at) >= 2:
        words[at[1]] = "other"
    return " ".join(words)


@dataclass
class Pairs:
    """Demonstration steps and their counterfactual pairs, as the tabletop recipe collects them."""

    data: DemoSteps
    recipe: TabletopRecipe
    collate: Collator  # shifts frames only when given a generator (training)

    @property
    def frames(self) -> np.ndarray:
        return np.asarray(self.recipe.cf_image, np.int64)  # [C] frame row of each pair

    def batch(self, pairs: np.ndarray, gen: torch.Generator | None = None) -> Batch:
        """Rows 2i and 2i + 1: pair i's frame with its recorded instruction, then with the swapped one."""
        r = self.recipe
        samples = []
        for c in pairs:
            row = int(r.cf_image[c])
            samples += [self.data.sample(row), (row, r.cf_prompts[c], r.cf_tokens[c])]
        extras = None
        if r.role_sup is not None:  # each row with the roles of its own instruction
            own = r.step_roles_all[self.frames[pairs]]
            extras = {"roles": np.stack([own, r.cf_roles_all[pairs]], axis=1).reshape(-1, 2)}
        return self.collate(samples, gen, extras)


def load_pairs(files: list[str], model: OpenVLA, transforms: Transforms, attn_role: float = 0.0,
               attn_role_tokens: int = 1, norm_stats: dict[str, Any] | None = None) -> Pairs:
    """Read ``files``, collect every counterfactual pair (and, with ``attn_role`` > 0, the roles and the role
    term on ``model``), with norm_stats from ``norm_stats`` when it holds the files' key."""
    key = next(iter(norm_stats)) if norm_stats else None  # labels in a checkpoint's own action scale
    recipe = TabletopRecipe(TabletopRecipeConfig(counterfactual_frac=0.5, attn_role=attn_role,
                                                 attn_role_tokens=attn_role_tokens))
    data = load_demos(files, transforms, key, norm_stats, recipe.read_demo)
    model.config = model.config.replace(norm_stats=data.norm_stats)
    recipe.prepare(model, data, transforms)
    return Pairs(data, recipe, demo_collator(data, transforms, model, SHIFT))


def split_pairs(pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Training pairs (frames in the first 85 % of rows) and held-out ones (the rest)."""
    cut = int(0.85 * len(pairs.data))
    return np.flatnonzero(pairs.frames < cut), np.flatnonzero(pairs.frames >= cut)


def probe_pairs(pairs: Pairs, seed: int) -> dict[str, np.ndarray]:
    """128 fixed training pairs and 128 held-out ones (split_pairs); a tiny file may hold no held-out pair."""
    train, held_out = split_pairs(pairs)
    rng = np.random.default_rng(seed + 1)
    sets = {"train": rng.choice(train, min(128, len(train)), replace=False),
            "held_out": rng.choice(held_out, min(128, len(held_out)), replace=False)}
    return {name: sel for name, sel in sets.items() if len(sel)}


def pair_scores(model: OpenVLA, pairs: Pairs, sel: np.ndarray) -> dict[str, float]:
    """own / swapped / both shares (see the module docstring) of the counterfactual pairs ``sel``."""
    batch = pairs.batch(sel)
    model.eval()
    with torch.no_grad():
        hidden = model.hidden_states(batch.pixel_values, batch.input_ids)
        pred = model.language_model.lm_head(hidden[batch.label_rows, batch.label_pos]).argmax(-1)
    model.train()
    rows = batch.label_rows.numpy()

    def first2(t: torch.Tensor) -> np.ndarray:  # [2 * pairs, 2]: the dx and dy tokens of each row
        return np.stack([t[rows == r][:2].numpy() for r in range(2 * len(sel))]).astype(int)

    p, lab = first2(pred), first2(batch.labels)

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.abs(a - b).sum(1)

    own = dist(p[0::2], lab[0::2]) < dist(p[0::2], lab[1::2])
    swapped = dist(p[1::2], lab[1::2]) < dist(p[1::2], lab[0::2])
    scores = {"own": float(own.mean()), "swapped": float(swapped.mean()), "both": float((own & swapped).mean())}
    # The first token alone (dx), on the pairs whose dx labels differ: no teacher-forced token before it.
    differs = lab[0::2, 0] != lab[1::2, 0]
    if differs.any():
        own_x = np.abs(p[0::2, 0] - lab[0::2, 0]) < np.abs(p[0::2, 0] - lab[1::2, 0])
        swapped_x = np.abs(p[1::2, 0] - lab[1::2, 0]) < np.abs(p[1::2, 0] - lab[0::2, 0])
        scores.update({"dx_pairs": int(differs.sum()), "dx_own": float(own_x[differs].mean()),
                       "dx_swapped": float(swapped_x[differs].mean()),
                       "dx_both": float((own_x & swapped_x)[differs].mean())})
    return scores


@dataclass(frozen=True, kw_only=True)
class BindingArgs(FitArgs):
    pairs: int = field(default=32, metadata={"help": "counterfactual pairs per batch (two rows each)"})
    preset: str = field(default="base-128", metadata={"help": "model preset (`rlrc-export presets`)"})
    override: str = field(default="{}", metadata={"help": "JSON of preset fields to change, e.g. "
                                                          "'{\"hidden_size\": 256, \"head_dim\": 64}'"})
    embed_std: float | None = field(default=None, metadata={"help": "init std of the token embeddings "
                                                                    "(default: 0.02, as every other weight)"})
    one_colour: bool = field(default=False, metadata={
        "help": "replace the second colour word of every instruction by 'other' ('stack the red block on the other "
                "block'), so binding is one colour lookup with no word order to read"})
    attn_sup: float = field(default=0.0, metadata={"help": "weight of the colour-word attention term "
                                                           "(research/attn_sup.py); 0 = off"})
    attn_role: float = field(default=0.0, metadata={"help": "weight of the recipe's role-attention term "
                                                            "(sim/recipes/attention.py); 0 = off"})
    attn_role_tokens: int = field(default=1, metadata={"help": "--attn-role at the positions predicting the first "
                                                               "N action tokens (2 = dx and dy)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pairs < 1 or self.attn_sup < 0 or self.attn_role < 0:
            raise ConfigError(f"--pairs={self.pairs} must be >= 1, --attn-sup={self.attn_sup} and "
                              f"--attn-role={self.attn_role} >= 0")
        names = {f.name for f in dataclasses.fields(TinyPreset)}
        unknown = sorted(set(_json_arg("override", self.override)) - names)
        if unknown:
            raise ConfigError(f"--override: {unknown} are not preset fields; choose from {sorted(names)}")

    def model_preset(self) -> TinyPreset:
        changes = {k: tuple(v) if isinstance(v, list) else v for k, v in _json_arg("override", self.override).items()}
        return dataclasses.replace(get_preset(self.preset), **changes)


@dataclass(frozen=True, kw_only=True)
class ScoreArgs:
    checkpoint: str = field(metadata={"help": "trained checkpoint directory (rlrc-train / rlrc-sim train)"})
    data: str = field(metadata={"help": "stack demos written by `rlrc-sim demos --families stack`, comma-separated"})
    seed: int = field(default=0, metadata={"help": "seed of the probe pairs (as the binding fit's)"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads"})
    json: str | None = field(default=None, metadata={"help": "write the scores here"})


def run_binding(args: BindingArgs, argv: list[str] | None = None) -> str:
    from research.attn_sup import AttentionSupervision

    torch.set_num_threads(args.threads)
    model, transforms = new_model(args.model_preset(), args.seed, embed_std=args.embed_std)
    pairs = load_pairs(args.files, model, transforms, args.attn_role, args.attn_role_tokens)
    if args.one_colour:
        pairs.data.prompts[:] = [transforms.prompt(one_colour(t)) for t in pairs.data.instructions]
        pairs.recipe.cf_prompts = [transforms.prompt(one_colour(t)) for t in pairs.recipe.cf_instruction]
    model.train()
    model.freeze_unused()
    train, held_out = split_pairs(pairs)
    probe = probe_pairs(pairs, args.seed)
    print(f"{len(train)} training pairs, {len(held_out)} held out", flush=True)
    attn_sup = AttentionSupervision(model, transforms.image, transforms.prompt) if args.attn_sup > 0 else None

    def extra(batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, stats = pairs.recipe.loss(batch)  # the role term (zero when --attn-role is off)
        if attn_sup is not None:
            sup = attn_sup(batch.pixel_values, batch.input_ids)
            total, stats = total + args.attn_sup * sup, {**stats, "losses/attn_sup": sup.detach()}
        return total, stats

    action = transforms.action
    loss_fn = ActionLoss(model, (action.first_action_token, action.vocab_size), 2.0, None, extra)

    def step_loss(step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        pick = train[torch.randint(0, len(train), (args.pairs,), generator=gen).numpy()]
        return loss_fn(pairs.batch(pick, gen))

    rows: list[dict[str, Any]] = []
    started = Started()

    def score(step: int, stats: dict[str, torch.Tensor]) -> None:
        row = {"step": step, "loss": round(float(stats["losses/action_ce"]), 4),
               **{k.split("/")[1]: round(float(v), 4) for k, v in stats.items() if k.startswith("losses/attn")},
               **{name: pair_scores(model, pairs, sel) for name, sel in probe.items()},
               "wall_s": round(time.perf_counter() - started.t0, 1)}
        rows.append(row)
        terms = "".join(f"{k} {row[k]:.3f}  " for k in ("attn_sup", "attn_role") if k in row)
        print(f"step {step}: loss {row['loss']:.3f}  {terms}" + "  ".join(
            f"{name} own {row[name]['own']:.2f} swapped {row[name]['swapped']:.2f} both {row[name]['both']:.2f}"
            for name in probe), flush=True)

    train_steps(model, step_loss, args, score)
    if args.json:
        write_report(args.json, {"schema": "rlrc-binding-fit/1", "data": args.data, "options": dataclasses.asdict(args),
                                 "pairs": {"train": len(train), "held_out": len(held_out)}, "rows": rows,
                                 "threads": torch.get_num_threads()}, started, command_line(f"{PROG} binding", argv))
    last = rows[-1]
    return f"{len(rows)} scores; last (step {last['step']}): " + ", ".join(
        f"{name} both {last[name]['both']:.2f}" for name in probe)


def run_score(args: ScoreArgs, argv: list[str] | None = None) -> str:
    from export.checkpoint import load_model

    torch.set_num_threads(args.threads)
    started = Started()
    model, info = load_model(args.checkpoint, device="cpu")
    transforms = Transforms.from_checkpoint(args.checkpoint, info.config)
    pairs = load_pairs([p for p in args.data.split(",") if p], model, transforms, norm_stats=info.config.norm_stats)
    scores = {name: pair_scores(model, pairs, sel) for name, sel in probe_pairs(pairs, args.seed).items()}
    if args.json:
        write_report(args.json, {"schema": "rlrc-binding-fit-score/1", "checkpoint": args.checkpoint,
                                 "data": args.data, "scores": scores}, started, command_line(f"{PROG} score", argv))
    return "\n".join(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in sc.items()) for name, sc in scores.items())


# --------------------------------------------------------------------------- grounding questions


@dataclass(frozen=True, kw_only=True)
class GroundingArgs(FitArgs):
    steps: int = field(default=300, metadata={"help": "optimizer steps"})
    warmup_steps: int = field(default=50, metadata={"help": "linear warm-up steps"})
    batch_size: int = field(default=64, metadata={"help": "questions per batch"})
    demos: int = field(default=700, metadata={"help": "use the first N demos of --data"})
    image_size: int = field(default=128, metadata={"help": "model input size, pixels"})
    tower: str = field(default="{}", metadata={"help": "JSON of tower overrides, e.g. '{\"patch_size\": 32}'"})
    layers: int = field(default=4, metadata={"help": "LLM layers (4 heads, 2 key/value heads each)"})
    hidden: int = field(default=128, metadata={"help": "LLM width"})
    mlp: int = field(default=344, metadata={"help": "LLM MLP width"})
    sincos: bool = field(default=True, metadata={"help": "sine-cosine initial position embeddings"})
    shift: int = field(default=SHIFT, metadata={"help": "random image shifts of up to N pixels; 0 = off"})
    target: str = field(default="object", metadata={"help": "answer with the named object's position, or with the "
                                                            "hand's (a control: the hand is large and always there)",
                                                    "choices": ["object", "hand"]})
    order: str = field(default="object_first", metadata={"help": "answer tokens: object x, y then object minus hand, "
                                                                 "or the offset first",
                                                         "choices": ["object_first", "offset_first"]})
    aux: float = field(default=0.0, metadata={"help": "weight of a per-patch colour-fraction auxiliary head on the "
                                                      "image embeddings; 0 = off"})
    attn_sup: float = field(default=0.0, metadata={"help": "weight of the colour-word attention term "
                                                           "(research/attn_sup.py); 0 = off"})
    attn_layer: int = field(default=0, metadata={"help": "--attn-sup: decoder layer of the supervised head"})
    attn_head: int = field(default=0, metadata={"help": "--attn-sup: the supervised head"})
    qk_gain: float = field(default=0.0, metadata={"help": "multiply the LLM's q/k projections' init (sharper attention "
                                                          "from the start); 0 = off"})
    qk_towers: bool = field(default=False, metadata={"help": "with --qk-gain: the towers' qkv too"})
    patch_gain: float = field(default=0.0, metadata={"help": "multiply the patch embeddings' init (content louder "
                                                             "against the position table); 0 = off"})
    proj_scale: float = field(default=0.0, metadata={"help": "multiply the projector's last layer; 0 = off"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("batch_size", "demos", "layers", "hidden", "mlp"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}={getattr(self, name)} must be >= 1")
        if min(self.shift, self.aux, self.attn_sup, self.qk_gain, self.patch_gain, self.proj_scale) < 0:
            raise ConfigError("--shift, --aux, --attn-sup, --qk-gain, --patch-gain and --proj-scale must be >= 0")
        _json_arg("tower", self.tower)

    def model_preset(self) -> TinyPreset:
        base = get_preset("base-128")
        n = self.layers
        return dataclasses.replace(base, tower={**(base.tower or {}), **_json_arg("tower", self.tower)},
                                   image_size=self.image_size, hidden_size=self.hidden, num_attention_heads=(4,) * n,
                                   num_key_value_heads=(2,) * n, intermediate_size=(self.mlp,) * n)


def _scale_init(model: OpenVLA, args: GroundingArgs) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if args.qk_gain and (name.endswith(("q_proj.weight", "k_proj.weight"))
                                 or (args.qk_towers and name.endswith("qkv.weight"))):
                p.mul_(args.qk_gain)
            if args.patch_gain and "patch_embed" in name and name.endswith("weight"):
                p.mul_(args.patch_gain)
        if args.proj_scale:
            model.projector.fc3.weight.mul_(args.proj_scale)
            model.projector.fc3.bias.mul_(args.proj_scale)


def grounding_questions(args: GroundingArgs, transforms: Transforms) -> dict[str, Any]:
    """Frames of the first ``args.demos`` demos and one (row, prompt, answer tokens [4]) per grounding question."""
    images, rows, names, answers, starts = [], [], {}, [], set()
    offset = 0
    for path in args.files:
        with DemoReader(path) as reader:
            for key in reader.demo_keys[: max(0, args.demos - len(starts))]:
                demo, info = reader.read_demo(key), reader.episode_info(key)
                if info is None:
                    raise ConfigError(f"{path}: a LIBERO file has no episode seeds to ask about; use demos from "
                                      "`rlrc-sim demos`")
                family, split, seed, ee = info
                starts.add(offset)
                for q in demo_queries(family, split, seed, demo.instruction, ee):
                    answer = q.answer
                    if args.target == "hand":
                        hand = ee[q.frame][:2].astype(np.float64)
                        answer = normalise_answer(np.concatenate([hand, hand]))
                    if args.order == "offset_first":
                        answer = np.concatenate([answer[2:], answer[:2]])
                    rows.append(offset + q.frame)
                    names.setdefault(q.name, len(names))
                    answers.append((names[q.name], answer))
                images.append(np.stack([transforms.image.resize(im) for im in demo.images]))
                offset += len(demo)
    if not answers:
        raise ConfigError(f"--data {args.data}: no grounding question (the demos' instructions do not re-draw)")
    prompt = dataclasses.replace(transforms.prompt, template=QUERY_TEMPLATE)
    prompts = [prompt(n) for n in names]
    values = np.asarray([a for _, a in answers])  # [Q, 4] in [-1, 1]
    tokens = transforms.action.encode(values).astype(np.int64)
    return {"images": np.concatenate(images), "rows": np.asarray(rows, np.int64), "values": values,
            "samples": [(r, prompts[n], t) for r, (n, _), t in zip(rows, answers, tokens)], "starts": starts}


def run_grounding(args: GroundingArgs, argv: list[str] | None = None) -> str:
    from research.attn_sup import AttentionSupervision
    from sim.recipes.attention import colour_fractions

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, transforms = new_model(args.model_preset(), args.seed, sincos=args.sincos)
    model.freeze_unused()
    _scale_init(model, args)
    q = grounding_questions(args, transforms)
    config = model.config
    collate = Collator(q["images"], transforms, config.num_patches, config.llm.pad_token_id or 0,
                       config.llm.eos_token_id, args.shift)
    cut = int(0.85 * len(q["images"]))  # the last 15 % of frames are held out
    train = np.flatnonzero(q["rows"] < cut)
    test = np.flatnonzero(q["rows"] >= cut)
    test = test[np.random.default_rng(args.seed).permutation(len(test))[:256]]
    if not len(train) or not len(test):
        raise ConfigError(f"--demos={args.demos}: too few demos to hold 15 % of the frames out; use more")
    action = transforms.action
    lo, hi = action.first_action_token, action.vocab_size
    attn_sup = (AttentionSupervision(model, transforms.image, transforms.prompt, args.attn_layer, args.attn_head)
                if args.attn_sup else None)

    def extra(batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sup = attn_sup(batch.pixel_values, batch.input_ids)
        return args.attn_sup * sup, {"losses/attn_sup": sup.detach()}

    loss_fn = ActionLoss(model, (lo, hi), 2.0, None, extra if attn_sup is not None else None)
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32)  # [C, 3]
    aux_head = torch.nn.Linear(config.llm.hidden_size, len(palette))
    span = np.array([r[1] - r[0] for r in ANSWER_RANGES])
    low = np.array([r[0] for r in ANSWER_RANGES])

    def metres(values: np.ndarray) -> np.ndarray:
        return (values + 1) / 2 * span + low

    def step_loss(step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pick = train[torch.randint(0, len(train), (args.batch_size,), generator=gen).numpy()]
        loss, stats = loss_fn(collate([q["samples"][i] for i in pick], gen))
        if args.aux:  # the unshifted frames: colour shares per patch from the image embeddings
            raw = q["images"][q["rows"][pick]]
            target = colour_fractions(torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255.0, palette,
                                      config.towers[0].patch_size)
            pred = aux_head(model.embed_image(torch.from_numpy(transforms.pixel_values(raw))))
            aux = ((torch.sigmoid(pred) - target) ** 2).mean() * 100
            loss, stats = loss + args.aux * aux, {**stats, "losses/aux": aux.detach()}
        return loss, {**stats, "losses/total": loss.detach()}

    def errors() -> tuple[np.ndarray, np.ndarray, int]:
        """Mean |error| in cm of the four answer values on the held-out questions, and on first frames only."""
        model.eval()
        errs = []
        with torch.no_grad():
            for s in range(0, len(test), 64):
                b = collate([q["samples"][i] for i in test[s : s + 64]])
                h = model.hidden_states(b.pixel_values, b.input_ids)
                logits = model.language_model.lm_head(h[b.label_rows, b.label_pos])[:, lo:hi]
                pred = (logits.argmax(-1) + lo).numpy().reshape(-1, 5)[:, :4]  # teacher-forced, per token
                true = b.labels.numpy().reshape(-1, 5)[:, :4]
                errs.append(np.abs(metres(action.decode(pred)) - metres(action.decode(true))))
        model.train()
        e = np.concatenate(errs) * 100
        first = np.array([q["rows"][i] in q["starts"] for i in test])
        return e.mean(0), e[first].mean(0) if first.any() else np.full(4, np.nan), int(first.sum())

    constant = np.abs(q["values"][test] - np.median(q["values"][train], 0)).mean(0) * span / 2 * 100
    print(f"{len(train)} training questions, {len(test)} held out; constant predictor |err| cm "
          f"{np.round(constant, 1)}", flush=True)
    gen = torch.Generator().manual_seed(args.seed)
    rows: list[dict[str, Any]] = []
    started = Started()

    def score(step: int, stats: dict[str, torch.Tensor]) -> None:
        err, first, n_first = errors()
        rows.append({"step": step, "loss": round(float(stats["losses/total"]), 4),
                     **{k.split("/")[1]: round(float(v), 4) for k, v in stats.items() if k in ("losses/attn_sup",
                                                                                            "losses/aux")},
                     "error_cm": np.round(err, 2).tolist(), "first_frame_error_cm": np.round(first, 2).tolist(),
                     "first_frames": n_first, "wall_s": round(time.perf_counter() - started.t0, 1)})
        print(f"step {step} loss {rows[-1]['loss']:.3f} test |err| cm {np.round(err, 1)} first frames "
              f"{np.round(first, 1)} ({n_first})", flush=True)

    train_steps(model, step_loss, args, score, list(aux_head.parameters()) if args.aux else None)
    if args.json:
        write_report(args.json, {"schema": "rlrc-grounding-fit/1", "options": dataclasses.asdict(args),
                                 "questions": {"train": len(train), "held_out": len(test)},
                                 "constant_error_cm": np.round(constant, 2).tolist(), "rows": rows},
                     started, command_line(f"{PROG} grounding", argv))
    return f"step {rows[-1]['step']}: object x, y error {rows[-1]['error_cm'][0]:.1f} / {rows[-1]['error_cm'][1]:.1f} cm"


def main(argv: list[str] | None = None) -> int:
    commands = {
        "binding": Subcommand(BindingArgs, lambda a: run_binding(a, argv),
                              "train from scratch on counterfactual stack pairs alone and score the binding"),
        "score": Subcommand(ScoreArgs, lambda a: run_score(a, argv),
                            "the binding fit's pair scores of a trained checkpoint"),
        "grounding": Subcommand(GroundingArgs, lambda a: run_grounding(a, argv),
                                "train from scratch on grounding questions alone and score the answers"),
    }
    return run_subcommands(PROG, __doc__, commands, argv)


if __name__ == "__main__":
    sys.exit(main())
