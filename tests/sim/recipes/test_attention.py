"""export/attn_sup.py (rlrc-train --attn-sup): colour targets, the head's attention, and the loss in training."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from export.attn_sup import AttentionSupervision, RoleSupervision, colour_fractions
from export.model import OpenVLA, init_weights
from export.tiny import PRESETS, preset_config
from export.tokenizer_gen import write_tokenizer
from export.train import TrainConfig, train
from rlrc_runtime.errors import ConfigError
from rlrc_runtime.preprocess import ImageTransform
from rlrc_runtime.prompt import PromptTokenizer
from sim.tasks import COLOURS

PALETTE = torch.tensor(list(COLOURS.values()), dtype=torch.float32)
RED, BLUE = list(COLOURS).index("red"), list(COLOURS).index("blue")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> PromptTokenizer:
    d = tmp_path_factory.mktemp("tok")
    write_tokenizer(d)
    return PromptTokenizer.from_dir(d)


@pytest.fixture()
def model() -> OpenVLA:
    model = OpenVLA(preset_config(PRESETS["tiny-128"], norm_stats={}))
    init_weights(model, seed=0)
    return model


def _scene(size: int = 128, patch: int = 16) -> tuple[np.ndarray, int, int]:
    """A grey table with a red square filling patch 9 and a blue one filling patch 30 (uint8 HWC)."""
    img = np.full((size, size, 3), 128, np.uint8)
    g = size // patch
    red, blue = 9, 30
    for p, name in ((red, "red"), (blue, "blue")):
        r, c = divmod(p, g)
        img[r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = np.round(np.array(COLOURS[name]) * 255)
    return img, red, blue


def _batch(model: OpenVLA, tokenizer: PromptTokenizer, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    transform = ImageTransform.from_config(model.config)
    img, _, _ = _scene()
    pixels = torch.from_numpy(np.concatenate([transform(img) for _ in instructions]))
    prompts = [tokenizer(i) for i in instructions]
    ids = np.full((len(prompts), max(map(len, prompts))), 32000, np.int64)
    for b, p in enumerate(prompts):
        ids[b, : len(p)] = p
    return pixels, torch.from_numpy(ids)


def test_colour_fractions_match_patches_by_hue():
    patch = 4
    rgb = torch.full((1, 3, 8, 8), 0.5)  # grey: unsaturated, matches nothing
    red = torch.tensor(COLOURS["red"])
    rgb[0, :, 0:4, 0:4] = red[:, None, None]  # patch 0: all red
    rgb[0, :, 0:4, 4:6] = (0.6 * red)[:, None, None]  # patch 1: half shaded red (same hue, darker)
    rgb[0, :, 4:8, 0:4] = torch.tensor(COLOURS["blue"])[:, None, None]  # patch 2: blue
    rgb[0, :, 4:8, 4:8] = (0.2 * red)[:, None, None]  # patch 3: too dark to count
    frac = colour_fractions(rgb, PALETTE, patch)
    assert frac.shape == (1, 4, len(COLOURS))
    expected = torch.zeros(4, len(COLOURS))
    expected[0, RED], expected[1, RED], expected[2, BLUE] = 1.0, 0.5, 1.0
    torch.testing.assert_close(frac[0], expected)


def test_word_attention_is_the_heads_real_attention(model, tokenizer):
    """The log-attention recomputed from the captured layer input reproduces the head's output in the
    model's own forward pass (scaled-dot-product attention with the causal mask)."""
    head = 3
    sup = AttentionSupervision(model, ImageTransform.from_config(model.config), tokenizer, layer=1, head=head)
    attn = model.language_model.model.layers[1].self_attn
    seen = {}
    attn.o_proj.register_forward_pre_hook(lambda m, a: seen.update(out=a[0]))
    attn.register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    pixels, ids = _batch(model, tokenizer, ["stack the red block on the blue block", "pick up the green cube",
                                            "push the block to the left"])
    with torch.no_grad():
        model.hidden_states(pixels, ids)
        rows, cols, logp = sup.word_attention(ids)
    assert rows.tolist() == [0, 0, 1]  # red, blue, green; the third prompt names no colour
    d = attn.head_dim
    v = attn.v_proj(seen["x"]).view(*seen["x"].shape[:2], -1, d)[:, :, head // sup.group]  # [B, L, D]
    pos = model.config.num_patches + cols
    expected = seen["out"].view(*seen["out"].shape[:2], -1, d)[rows, pos, head]  # [M, D]
    mixed = torch.einsum("ml,mld->md", logp.exp(), v[rows])
    torch.testing.assert_close(mixed, expected, rtol=1e-4, atol=1e-5)
    assert torch.isneginf(logp[0, pos[0] + 1 :]).all() and torch.isfinite(logp[0, : pos[0] + 1]).all()


def test_loss_pulls_the_colour_word_to_its_patches(model, tokenizer):
    sup = AttentionSupervision(model, ImageTransform.from_config(model.config), tokenizer)
    pixels, ids = _batch(model, tokenizer, ["stack the red block on the blue block"])
    _, red, blue = _scene()

    def red_mass() -> float:
        with torch.no_grad():
            model.hidden_states(pixels, ids)
            rows, cols, logp = sup.word_attention(ids)
        word = ids[rows, cols]
        return float(logp[word == sup.word_ids[RED]][0, 1 + red].exp())

    before = red_mass()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        model.hidden_states(pixels, ids)
        loss = sup(pixels, ids)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = red_mass()
    assert before < 0.1 < 0.5 < after, (before, after)
    assert losses[-1] < 0.5 * losses[0]
    # A batch without colour words (or without the named colour in view) gives an exact zero.
    model.hidden_states(*_batch(model, tokenizer, ["push the block to the left"]))
    assert sup(*_batch(model, tokenizer, ["push the block to the left"])).item() == 0.0
    model.hidden_states(*_batch(model, tokenizer, ["pick up the yellow block"]))
    assert sup(*_batch(model, tokenizer, ["pick up the yellow block"])).item() == 0.0


def test_bad_layer_head_and_weight_are_clear_errors(model, tokenizer):
    transform = ImageTransform.from_config(model.config)
    with pytest.raises(ConfigError, match="--attn-sup-layer=9"):
        AttentionSupervision(model, transform, tokenizer, layer=9)
    with pytest.raises(ConfigError, match="--attn-sup-head=12"):
        AttentionSupervision(model, transform, tokenizer, head=12)
    with pytest.raises(ConfigError, match="--attn-sup=-1"):
        TrainConfig(data="x", out="y", attn_sup=-1.0)
    with pytest.raises(ConfigError, match="--attn-role-layer=7"):
        RoleSupervision(model, transform, layer=7)
    with pytest.raises(ConfigError, match="--attn-role=-1"):
        TrainConfig(data="x", out="y", attn_role=-1.0)


def test_role_loss_pulls_the_action_query_to_target_and_goal(model, tokenizer):
    """--attn-role: head 0 at the position predicting the first action token learns the target's patches,
    the goal head the goal's, for the same image and prompt; rows without a role add nothing."""
    sup = RoleSupervision(model, ImageTransform.from_config(model.config), layer=1)
    assert sup.heads == (0, 2)  # tiny-128 layer 1: 4 heads in 2 key/value groups
    pixels, ids = _batch(model, tokenizer, ["stack the red block on the blue block"] * 2)
    query_pos = torch.full((2,), model.config.num_patches + int((ids[0] != 32000).sum()) - 1)
    roles = torch.tensor([[RED, BLUE], [-1, -1]])  # row 1: a grounding question (no roles)
    _, red, blue = _scene()

    def masses() -> tuple[float, float]:
        with torch.no_grad():
            model.hidden_states(pixels, ids)
            t = sup.attention(torch.tensor([0]), query_pos[:1], sup.heads[0])[0, 1 + red].exp()
            g = sup.attention(torch.tensor([0]), query_pos[:1], sup.heads[1])[0, 1 + blue].exp()
        return float(t), float(g)

    before = masses()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(25):
        opt.zero_grad()
        model.hidden_states(pixels, ids)
        loss = sup(pixels, query_pos, roles)
        loss.backward()
        opt.step()
    after = masses()
    assert max(before) < 0.1 and min(after) > 0.5, (before, after)
    model.hidden_states(pixels, ids)
    assert sup(pixels, query_pos, torch.full((2, 2), -1)).item() == 0.0


def test_episode_roles_name_target_and_goal_colours():
    from sim.grounding import redraw_task, episode_roles

    for family in ("pick", "push", "place", "stack"):
        for seed in range(20):
            task = redraw_task(family, "id", seed)
            target, goal = episode_roles(family, "id", seed, task.instruction)
            colours = [p.colour for p in task.placements]
            t = task.placement(task.target).colour
            assert target == (t if colours.count(t) == 1 else None)
            assert target is None or target in task.instruction
            if family in ("pick", "push"):
                assert goal is None
            else:
                g = task.placement(task.goal).colour
                assert goal == (g if colours.count(g) == 1 else None)
                assert goal is None or goal in task.instruction
    assert episode_roles("stack", "id", 0, "not the drawn instruction") == (None, None)


def test_rlrc_train_logs_the_term(tmp_path):
    from sim.data import DemoConfig, write_demos

    demos = tmp_path / "demos.hdf5"
    write_demos(DemoConfig(episodes=2, families=("pick",), image_size=64, seed=0), demos, progress=False)
    cfg = TrainConfig(data=str(demos), out=str(tmp_path / "run"), preset="tiny-128", steps=3, batch_size=4,
                      warmup_steps=1, save_every=3, log_every=1, progress=False, attn_sup=0.5, attn_role=0.5)
    final = train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(np.isfinite(r["losses/attn_sup"]) and r["losses/attn_sup"] > 0 for r in rows)
    assert all(np.isfinite(r["losses/attn_role"]) and r["losses/attn_role"] > 0 for r in rows)
    assert all("losses/action_ce" in r for r in rows)
    # Training only: the checkpoint holds the model's tensors and nothing of the supervision.
    from safetensors import safe_open

    files = list(Path(final).glob("*.safetensors"))
    with safe_open(str(files[0]), "pt") as f:
        assert not any("attn_sup" in k for k in f.keys())


def test_role_loss_over_several_action_tokens_averages_their_positions(model, tokenizer):
    """--attn-role-tokens 2: the same pull at the positions predicting dx and dy, averaged."""
    transform = ImageTransform.from_config(model.config)
    one, two = RoleSupervision(model, transform, layer=1), RoleSupervision(model, transform, layer=1, tokens=2)
    pixels, ids = _batch(model, tokenizer, ["stack the red block on the blue block"] * 2)
    query_pos = torch.full((2,), model.config.num_patches + int((ids[0] != 32000).sum()) - 3)
    roles = torch.tensor([[RED, BLUE], [BLUE, RED]])
    with torch.no_grad():
        model.hidden_states(pixels, ids)
        first, second, both = one(pixels, query_pos, roles), one(pixels, query_pos + 1, roles), two(pixels, query_pos, roles)
    assert not torch.isclose(first, second)  # another position attends differently
    assert torch.isclose(both, (first + second) / 2, rtol=1e-5)
    with pytest.raises(ConfigError, match="--attn-role-tokens=8"):
        RoleSupervision(model, transform, tokens=8)
    with pytest.raises(ConfigError, match="--attn-role-tokens=0"):
        TrainConfig(data="x", out="y", attn_role=1.0, attn_role_tokens=0)
