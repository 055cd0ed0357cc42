"""Grounding bench: how fast does a from-scratch model learn "where is the {colour} {object}?"

    python benchmarks/grounding_bench.py '{"steps": 1000, "every": 200}'
    python benchmarks/grounding_bench.py '{"steps": 600, "target": "hand"}'      # control: the hand
    options (JSON): steps, every, lr, bs, demos, data, tower (overrides, e.g. {"patch_size": 32}),
                    layers, hidden, mlp, sincos, shift, target ("object" | "hand"), order ("rel_first"),
                    aux (weight of a per-patch colour-fraction auxiliary head),
                    attn_sup (weight of attention supervision: LLM layer attn_layer, head attn_head, from
                    each colour word to the patches of that colour),
                    qk_gain (multiply the LLM's q/k init; qk_towers also the towers' qkv), patch_gain

A few minutes per question on 2 cores instead of an hour of policy training: the base-128 model
(or a variant) is trained on grounding queries only (sim/grounding.py) from the first `demos`
demos of `data`; 15 % of frames are held out. Printed every `every` steps: mean absolute error
in cm of the four answer values (object x, y; object minus hand x, y), teacher-forced, on all
held-out queries and on first frames only. Results and reading: benchmarks/results/grounding_bench.md.
Note: answer tokens 3-4 see tokens 1-2 (teacher forcing), so rel = obj - hand is easy once obj is
given; only the first two tokens measure localisation.
"""
import sys, time, json, dataclasses, numpy as np, torch
torch.set_num_threads(2)
from export.model import OpenVLA, init_weights
from export.tiny import TinyPreset, preset_config, PRESETS
from export.tokenizer_gen import write_tokenizer
from export.train import ActionDataset, ActionLoss, make_batch, param_groups
from rlrc_runtime.action import ActionTokenizer
from rlrc_runtime.preprocess import ImageTransform
from rlrc_runtime.prompt import PromptTokenizer
from sim.data import DemoReader
from sim.grounding import QUERY_TEMPLATE, demo_queries, ANSWER_RANGES
args = json.loads(sys.argv[1])
steps, lr, bs = args.get("steps", 300), args.get("lr", 7e-4), args.get("bs", 64)
base = PRESETS["base-128"]
L = args.get("layers", 4)
preset = dataclasses.replace(base, tower={**base.tower, **args.get("tower", {})}, image_size=args.get("image_size", 128),
                             num_attention_heads=(4,) * L, num_key_value_heads=(2,) * L, intermediate_size=(args.get("mlp", 344),) * L,
                             hidden_size=args.get("hidden", 128))
cfg = preset_config(preset, norm_stats={})
torch.manual_seed(0)
model = OpenVLA(cfg); init_weights(model, seed=0, sincos_pos=args.get("sincos", True)); model.freeze_unused()
if args.get("qk_gain"):  # sharper attention from the start: scale every q/k projection's init
    with torch.no_grad():
        for n, p_ in model.named_parameters():
            if n.endswith(("q_proj.weight", "k_proj.weight")) or (args.get("qk_towers") and n.endswith("qkv.weight")):
                p_.mul_(args["qk_gain"])
if args.get("patch_gain"):  # patch content louder against the sine-cosine position table
    with torch.no_grad():
        for n, p_ in model.named_parameters():
            if "patch_embed" in n and n.endswith("weight"):
                p_.mul_(args["patch_gain"])
if args.get("proj_scale"):
    with torch.no_grad(): model.projector.fc3.weight.mul_(args["proj_scale"]); model.projector.fc3.bias.mul_(args["proj_scale"])
import tempfile
td = tempfile.mkdtemp(); write_tokenizer(td); tok = PromptTokenizer.from_dir(td)
qtok = dataclasses.replace(tok, template=QUERY_TEMPLATE)
tf = ImageTransform.from_config(cfg); at = ActionTokenizer()
imgs, qi, qp, qa, names = [], [], [], [], {}
starts = set()
off = 0
N = args.get("demos", 700)
with DemoReader(args.get("data", "artifacts/base_policy/demos_id_2000.hdf5")) as r:
    for key in r.demo_keys[:N]:
        d = r.read_demo(key); fam, split, seed, ee = r.episode_info(key); starts.add(off)
        for q in demo_queries(fam, split, seed, d.instruction, ee):
            ans = q.answer
            if args.get("order") == "rel_first":
                ans = np.concatenate([ans[2:], ans[:2]])
            if args.get("target") == "hand":
                from sim.grounding import normalise_answer
                h = ee[q.frame][:2].astype(np.float64); ans = normalise_answer(np.concatenate([h, h]))
            qi.append(off + q.frame); qp.append(names.setdefault(q.name, len(names))); qa.append(ans)
        imgs.append(np.stack([tf.resize(im) for im in d.images])); off += len(d)
imgs = np.concatenate(imgs); qa = np.asarray(qa)
ds = ActionDataset(images=imgs, tokens=np.zeros((len(imgs), 7), np.int64), instruction_index=np.zeros(len(imgs), np.int64),
                   prompts=[tok("x")], instructions=["x"], norm_stats={}, dataset_key="x",
                   query_image=np.asarray(qi), query_prompt=np.asarray(qp), query_tokens=at.encode(qa).astype(np.int64),
                   query_prompts=[qtok(n) for n in names])
# split queries by demo: last 15% images held out
cut = int(0.85 * len(imgs)); tr = np.flatnonzero(ds.query_image < cut); te = np.flatnonzero(ds.query_image >= cut)
te = te[np.random.default_rng(0).permutation(len(te))[:256]]
lossf = ActionLoss(model, (31744, 32000), 2.0)
from export.attn_sup import AttentionSupervision, colour_fractions
from sim.tasks import COLOURS
PAL = torch.tensor(list(COLOURS.values()), dtype=torch.float32)  # [6, 3]
def colour_targets(imgs_u8, patch):
    rgb = torch.from_numpy(imgs_u8).permute(0, 3, 1, 2).float() / 255.0
    return colour_fractions(rgb, PAL, patch)
aux_w = args.get("aux", 0.0)
aux_head = torch.nn.Linear(cfg.llm.hidden_size, 6)

# Attention supervision (training-only, export/attn_sup.py; rlrc-train --attn-sup): one LLM head's attention
# from each colour word of the prompt is pulled towards the patches showing that colour.
attn_w = args.get("attn_sup", 0.0)
sup_term = AttentionSupervision(model, tf, tok, args.get("attn_layer", 0), args.get("attn_head", 0)) if attn_w else None

opt = torch.optim.AdamW(param_groups(model, 0.01) + [{"params": list(aux_head.parameters()), "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
lo = np.array([r[0] for r in ANSWER_RANGES]); hi = np.array([r[1] for r in ANSWER_RANGES])
def evaluate():
    model.eval(); errs = []
    with torch.no_grad():
        for s in range(0, len(te), 64):
            b = make_batch(ds, np.zeros(0, np.int64), tf, cfg.num_patches, 32000, 2, None, 0, te[s:s+64])
            h = model.hidden_states(b.pixel_values, b.input_ids)
            logits = model.language_model.lm_head(h[b.label_rows, b.label_pos])[:, 31744:32000]
            pred = (logits.argmax(-1) + 31744).numpy().reshape(-1, 5)[:, :4]  # teacher-forced per-token argmax
            true = b.labels.numpy().reshape(-1, 5)[:, :4]
            m = lambda ids: (at.decode(ids) + 1) / 2 * (hi - lo) + lo
            errs.append(np.abs(m(pred) - m(true)))
    model.train(); E = np.concatenate(errs); first = np.array([ds.query_image[i] in starts for i in te])
    return np.round(E.mean(0) * 100, 1), "frame0:", np.round(E[first].mean(0) * 100, 1), int(first.sum())
t0 = time.time(); gen = torch.Generator().manual_seed(0)
print(args, "queries", len(tr), "const-baseline", np.round(np.abs(qa[te] - np.median(qa[tr], 0)).mean(0) * (hi - lo) / 2 * 100, 1), flush=True)
for step in range(1, steps + 1):
    q = tr[torch.randint(0, len(tr), (bs,), generator=gen).numpy()]
    b = make_batch(ds, np.zeros(0, np.int64), tf, cfg.num_patches, 32000, 2, gen, 6 if args.get("shift", True) else 0, q)
    loss, st = lossf(b)
    if aux_w:
        # same (unshifted) images: the batch shift is applied inside make_batch, so recompute on the raw rows
        raw = ds.images[ds.query_image[q]]
        tgt = colour_targets(raw, cfg.towers[0].patch_size)
        px = torch.from_numpy(np.concatenate([tf(im) for im in raw]))
        pred = aux_head(model.embed_image(px))
        aux = ((torch.sigmoid(pred) - tgt) ** 2).mean() * 100
        loss = loss + aux_w * aux
    if attn_w:
        sup = sup_term(b.pixel_values, b.input_ids)
        loss = loss + attn_w * sup
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    for g in opt.param_groups: g["lr"] = lr * min(1, step / 50)
    opt.step()
    if step % args.get("every", 100) == 0:
        print(f"step {step} loss {loss.item():.3f}" + (f" attn_sup {sup.item():.3f}" if attn_w else "") + f" test |err| cm {evaluate()} t={time.time()-t0:.0f}s", flush=True)
