"""sim/recipes/attention.py (the recipe's --attn-role): colour targets, the head's attention, the role loss."""

import numpy as np
import pytest
import torch

from export.model import OpenVLA, init_weights
from export.tiny import PRESETS, preset_config
from export.tokenizer_gen import write_tokenizer
from rlrc_runtime.errors import ConfigError
from rlrc_runtime.preprocess import ImageTransform
from rlrc_runtime.prompt import PromptTokenizer
from sim.recipes.attention import RoleSupervision, colour_fractions
from sim.recipes.tabletop import TabletopRecipeConfig
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


def test_recomputed_attention_is_the_heads_real_attention(model, tokenizer):
    """The log-attention recomputed from the captured layer input reproduces the head's output in the
    model's own forward pass (scaled-dot-product attention with the causal mask)."""
    sup = RoleSupervision(model, ImageTransform.from_config(model.config), layer=1)
    head = sup.heads[1]
    attn = model.language_model.model.layers[1].self_attn
    seen = {}
    attn.o_proj.register_forward_pre_hook(lambda m, a: seen.update(out=a[0]))
    attn.register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    pixels, ids = _batch(model, tokenizer, ["stack the red block on the blue block", "pick up the green cube"])
    rows = torch.tensor([0, 0, 1])
    pos = model.config.num_patches + torch.tensor([3, 7, 2])
    with torch.no_grad():
        model.hidden_states(pixels, ids)
        logp = sup.attention(rows, pos, head)
    d = attn.head_dim
    v = attn.v_proj(seen["x"]).view(*seen["x"].shape[:2], -1, d)[:, :, head // sup.group]  # [B, L, D]
    expected = seen["out"].view(*seen["out"].shape[:2], -1, d)[rows, pos, head]  # [M, D]
    mixed = torch.einsum("ml,mld->md", logp.exp(), v[rows])
    torch.testing.assert_close(mixed, expected, rtol=1e-4, atol=1e-5)
    assert torch.isneginf(logp[0, pos[0] + 1 :]).all() and torch.isfinite(logp[0, : pos[0] + 1]).all()


def test_bad_layer_and_weight_are_clear_errors(model):
    with pytest.raises(ConfigError, match="--attn-role-layer=7"):
        RoleSupervision(model, ImageTransform.from_config(model.config), layer=7)
    with pytest.raises(ConfigError, match="--attn-role=-1"):
        TabletopRecipeConfig(attn_role=-1.0)


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
    from sim.recipes.grounding import episode_roles, redraw_task

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
        TabletopRecipeConfig(attn_role=1.0, attn_role_tokens=0)
