"""The OpenVLA architecture in plain PyTorch (design.md §3), readable top to bottom.

Module names mirror the HF OpenVLA checkpoint (``vision_backbone.featurizer.blocks.0.attn.qkv``,
``language_model.model.layers.0.self_attn.q_proj`` ...), so that a checkpoint's keys load with no
renaming beyond old timm spellings (see ``export.checkpoint``). timm and transformers are not
used: the towers are plain ViTs re-implemented here, and every Llama layer may have its own head
count and MLP width (structured pruning makes them differ).

Numerics follow the reference implementations: LayerNorm eps 1e-6 and exact GELU in the towers,
RMSNorm computed in float32, RoPE angles in float32 then cast, SDPA attention, greedy argmax over
the full vocabulary.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rlrc_runtime.config import LLMConfig, TowerConfig, VLAConfig
from rlrc_runtime.errors import ConfigError, NonFiniteOutputError


# --------------------------------------------------------------------------- vision towers


class LayerScale(nn.Module):
    """Per-channel residual scale; OpenVLA renames timm's ``gamma`` to ``scale_factor``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


class ViTAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape  # [B, N, C]
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, H, N, D]
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class ViTMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf GELU, as timm's default for both towers
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.attn = ViTAttention(cfg.embed_dim, cfg.num_heads)
        self.ls1 = LayerScale(cfg.embed_dim) if cfg.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.mlp = ViTMlp(cfg.embed_dim, cfg.mlp_dim)
        self.ls2 = LayerScale(cfg.embed_dim) if cfg.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, 3, S, S] -> [B, P, C]


class AttentionPoolMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)


class AttentionPoolLatent(nn.Module):
    """SigLIP's pooling head. OpenVLA never runs it; it is held so checkpoints round-trip whole."""

    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.latent = nn.Parameter(torch.zeros(1, 1, d))
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.mlp = AttentionPoolMlp(d, cfg.mlp_dim)


class VisionTower(nn.Module):
    """A timm-layout ViT returning the patch tokens of its second-to-last block."""

    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        if cfg.class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        if cfg.num_registers:
            self.reg_token = nn.Parameter(torch.zeros(1, cfg.num_registers, cfg.embed_dim))
        # Position embeddings cover the patches only (timm no_embed_class / no class token).
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches, cfg.embed_dim))
        self.blocks = nn.ModuleList(ViTBlock(cfg) for _ in range(cfg.depth))
        # The final norm (and SigLIP's attn_pool) are unused by OpenVLA but are in every checkpoint.
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        if cfg.attn_pool:
            self.attn_pool = AttentionPoolLatent(cfg)

    def unused_modules(self) -> list[nn.Module]:
        """Modules kept in checkpoints that ``forward`` never runs (blocks after the feature block, the
        final norm, SigLIP's attention pool): trainers freeze them, and DDP needs every trained
        parameter to get a gradient."""
        mods: list[nn.Module] = list(self.blocks[self.cfg.feature_block + 1 :]) + [self.norm]
        if self.cfg.attn_pool:
            mods.append(self.attn_pool)
        return mods

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> patch features [B, P, C] from block ``depth - 2``, no final norm."""
        x = self.patch_embed(pixels) + self.pos_embed
        prefix = []
        if self.cfg.class_token:
            prefix.append(self.cls_token.expand(x.shape[0], -1, -1))
        if self.cfg.num_registers:
            prefix.append(self.reg_token.expand(x.shape[0], -1, -1))
        if prefix:
            x = torch.cat([*prefix, x], dim=1)
        # The last block's output is never used, so it is not computed.
        for blk in self.blocks[: self.cfg.feature_block + 1]:
            x = blk(x)
        return x[:, self.cfg.num_prefix_tokens :]


class VisionBackbone(nn.Module):
    """One tower, or DINOv2 + SigLIP fused on channels (input channels 0-2 and 3-5)."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.featurizer = VisionTower(config.towers[0])
        if config.use_fused_vision_backbone:
            self.fused_featurizer = VisionTower(config.towers[1])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3 * n_towers, S, S] -> [B, P, sum of tower widths]."""
        if not hasattr(self, "fused_featurizer"):
            return self.featurizer(pixel_values)
        img, img_fused = torch.split(pixel_values, [3, 3], dim=1)
        return torch.cat([self.featurizer(img), self.fused_featurizer(img_fused)], dim=2)


class Projector(nn.Module):
    """OpenVLA's GELU MLP projector: fused = fc1 (x4) / fc2 / fc3, single tower = fc1 / fc2."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        dims = config.projector_dims
        self.fc1 = nn.Linear(dims[0], dims[1])
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(dims[1], dims[2])
        if len(dims) == 4:
            self.act_fn2 = nn.GELU()
            self.fc3 = nn.Linear(dims[2], dims[3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.act_fn1(self.fc1(x)))
        if hasattr(self, "fc3"):
            x = self.fc3(self.act_fn2(x))
        return x


# --------------------------------------------------------------------------- language model


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class KVCache:
    """Static per-layer key/value buffers [B, H_kv(layer), S_max, D], owned by one generation.

    ``update`` writes the new keys/values at ``start`` and returns views of everything written so
    far, so attention sees exactly the prefix HF's dynamic cache would hold.
    """

    def __init__(self, llm: LLMConfig, batch: int, max_len: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self.max_len = max_len
        self.k = [torch.zeros(batch, kv, max_len, llm.head_dim, dtype=dtype, device=device) for kv in llm.num_key_value_heads]
        self.v = [torch.zeros_like(k) for k in self.k]

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + k.shape[2]
        if end > self.max_len:
            raise RuntimeError(f"KV cache holds {self.max_len} positions; writing up to {end}")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", self._inv_freq(), persistent=False)

    def _inv_freq(self, device: torch.device | str | None = None) -> torch.Tensor:
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device).float() / self.head_dim
        return 1.0 / (self.theta**exponent)

    def reset(self, device: torch.device | str) -> None:
        """Recompute the (non-persistent) buffer, e.g. after a meta-device build."""
        self.inv_freq = self._inv_freq(device)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [T] -> cos, sin [1, 1, T, D] in ``dtype`` (angles computed in float32)."""
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]  # [T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[None, None], emb.sin().to(dtype)[None, None]


class LlamaAttention(nn.Module):
    def __init__(self, llm: LLMConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.num_heads = llm.num_attention_heads[layer]
        self.num_kv_heads = llm.num_key_value_heads[layer]
        self.head_dim = llm.head_dim
        h, d = llm.hidden_size, llm.head_dim
        self.q_proj = nn.Linear(h, self.num_heads * d, bias=False)
        self.k_proj = nn.Linear(h, self.num_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(h, self.num_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(self.num_heads * d, h, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        start: int,
        cache: KVCache | None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``mask`` [B, 1, T, T] bool (True = may attend) replaces the causal mask (parallel decoding)."""
        b, t, _ = x.shape  # [B, T, hidden]
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, T, D]
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update(self.layer, start, k, v)  # [B, Hkv, start + T, D]
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:  # query head h reads kv head h // groups, as HF's repeat_kv
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        if mask is not None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif t == 1:
            out = F.scaled_dot_product_attention(q, k, v)
        elif start == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # a chunk appended after cached positions: row i sees keys up to start + i
            allowed = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(diagonal=start)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


class LlamaMLP(nn.Module):
    def __init__(self, llm: LLMConfig, layer: int) -> None:
        super().__init__()
        h, m = llm.hidden_size, llm.intermediate_size[layer]
        self.gate_proj = nn.Linear(h, m, bias=False)
        self.up_proj = nn.Linear(h, m, bias=False)
        self.down_proj = nn.Linear(m, h, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, llm: LLMConfig, layer: int) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(llm, layer)
        self.mlp = LlamaMLP(llm, layer)
        self.input_layernorm = RMSNorm(llm.hidden_size, llm.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(llm.hidden_size, llm.rms_norm_eps)
        # A fully pruned sub-block contributes nothing; skipping it avoids zero-width matmuls.
        self.has_attn = llm.num_attention_heads[layer] > 0
        self.has_mlp = llm.intermediate_size[layer] > 0

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start: int, cache: KVCache | None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.has_attn:
            x = x + self.self_attn(self.input_layernorm(x), cos, sin, start, cache, mask)
        if self.has_mlp:
            x = x + self.mlp(self.post_attention_layernorm(x))
        return x


class LlamaModel(nn.Module):
    def __init__(self, llm: LLMConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(llm.vocab_size, llm.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(llm, i) for i in range(llm.num_layers))
        self.norm = RMSNorm(llm.hidden_size, llm.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(llm.head_dim, llm.rope_theta)

    def forward(self, inputs_embeds: torch.Tensor, start: int = 0, cache: KVCache | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T, hidden] embeddings at positions start..start+T-1 -> final-norm hidden [B, T, hidden].

        ``mask`` [B, 1, T, T] bool replaces the causal mask (no cache): see ``parallel_mask``.
        """
        positions = torch.arange(start, start + inputs_embeds.shape[1], device=inputs_embeds.device)
        cos, sin = self.rotary_emb(positions, inputs_embeds.dtype)
        x = inputs_embeds
        for layer in self.layers:
            x = layer(x, cos, sin, start, cache, mask)
        return self.norm(x)


def parallel_mask(first_slot: torch.Tensor, n_slots: torch.Tensor, length: int) -> torch.Tensor:
    """Attention mask of parallel decoding [B, 1, L, L] bool (True = may attend).

    Row b holds ``[BOS, patches, prompt]`` up to position ``first_slot[b]``, then ``n_slots[b]`` empty
    action slots, then padding. Everything is causal except the slots, which also see each other
    (bidirectional within the chunk, causal to the prompt) -- OpenVLA-OFT's parallel decoding.
    """
    pos = torch.arange(length, device=first_slot.device)
    causal = pos[None, :, None] >= pos[None, None, :]  # [1, L, L]: query i sees key j <= i
    lo, hi = first_slot[:, None], (first_slot + n_slots)[:, None]
    in_slots = (pos[None] >= lo) & (pos[None] < hi)  # [B, L]
    both = in_slots[:, :, None] & in_slots[:, None, :]  # [B, L, L]
    return (causal | both)[:, None]


class LlamaForCausalLM(nn.Module):
    def __init__(self, llm: LLMConfig) -> None:
        super().__init__()
        self.model = LlamaModel(llm)
        self.lm_head = nn.Linear(llm.hidden_size, llm.vocab_size, bias=False)


# --------------------------------------------------------------------------- the VLA


def action_slot_count(config: VLAConfig) -> int:
    """Parallel decoding's action slots: K x the action dimension of the model's norm_stats."""
    from rlrc_runtime.action import action_stats

    dims = {action_stats(config.norm_stats, key).action_dim for key in config.norm_stats or {}}
    if len(dims) != 1:
        raise ConfigError(f"learned action slots are one per action token of a chunk, so the model's norm_stats need "
                          f"one action dimension for every dataset; found {sorted(dims) or 'no norm_stats'}")
    return config.action_chunk * dims.pop()


class OpenVLA(nn.Module):
    """Vision towers -> projector -> Llama, with the image patches inserted after BOS."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.config = config
        self.vision_backbone = VisionBackbone(config)
        self.projector = Projector(config)
        self.language_model = LlamaForCausalLM(config.llm)
        if config.slot_embeddings == "learned":
            self.action_slots = nn.Parameter(torch.zeros(action_slot_count(config), config.llm.hidden_size))

    def learn_slot_embeddings(self, seed: int = 0, std: float = 0.02) -> None:
        """Give parallel decoding one trained input vector per action slot (``action_slots``
        [K x action_dim, hidden], drawn from N(0, std)) in place of the empty slots, whose outputs
        the decoder can only tell apart by their positions. A no-op when the model has them."""
        if hasattr(self, "action_slots"):
            return
        self.config = self.config.replace(slot_embeddings="learned")
        gen = torch.Generator().manual_seed(seed)
        table = torch.randn(action_slot_count(self.config), self.config.llm.hidden_size, generator=gen) * std
        self.action_slots = nn.Parameter(table.to(device=self.device, dtype=self.dtype))

    def slot_embeds(self, n_tokens: int) -> torch.Tensor:
        """[n_tokens, hidden]: what parallel decoding's action slots hold (zeros, or ``action_slots``)."""
        slots = getattr(self, "action_slots", None)
        if slots is None:
            return torch.zeros(n_tokens, self.config.llm.hidden_size, device=self.device, dtype=self.dtype)
        if slots.shape[0] != n_tokens:
            raise ConfigError(f"this model has {slots.shape[0]} learned action slots (K x action_dim); {n_tokens} "
                              "were asked for")
        return slots

    @property
    def dtype(self) -> torch.dtype:
        return self.projector.fc1.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.projector.fc1.weight.device

    def freeze_unused(self) -> int:
        """Stop gradients to the towers' never-run modules (`VisionTower.unused_modules`); returns how
        many parameters that froze."""
        towers = [self.vision_backbone.featurizer] + ([self.vision_backbone.fused_featurizer]
                                                      if hasattr(self.vision_backbone, "fused_featurizer") else [])
        n = 0
        for tower in towers:
            for mod in tower.unused_modules():
                for p in mod.parameters():
                    p.requires_grad_(False)
                    n += p.numel()
        return n

    def embed_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [B, 3 * n_towers, S, S] -> projected patches [B, P, hidden]."""
        return self.projector(self.vision_backbone(pixel_values.to(self.dtype)))

    def multimodal_embeds(self, input_ids: torch.Tensor, patch_embeds: torch.Tensor) -> torch.Tensor:
        """[B, T] ids + [B, P, hidden] patches -> [B, 1 + P + T - 1, hidden] = [BOS, patches, rest]."""
        tok = self.language_model.model.embed_tokens(input_ids)
        return torch.cat([tok[:, :1], patch_embeds.to(tok.dtype), tok[:, 1:]], dim=1)

    def hidden_states(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden states [B, P + T, hidden] of ``[BOS, patches, ids[1:]]`` (no cache).

        Text token j >= 1 sits at position P + j and is predicted from position P + j - 1.
        """
        embeds = self.multimodal_embeds(input_ids, self.embed_image(pixel_values))
        return self.language_model.model(embeds)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Training/scoring pass without a cache: logits [B, P + T, vocab] (float32)."""
        return self.language_model.lm_head(self.hidden_states(pixel_values, input_ids)).float()

    def parallel_hidden_states(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, prompt_lens: torch.Tensor,
                               n_slots: torch.Tensor) -> torch.Tensor:
        """Parallel decoding, training form: final-norm hidden states [B, P + W, hidden] of
        ``[BOS, patches, prompt[1:], slots, pad]``.

        input_ids [B, W] hold each row's prompt (``prompt_lens[b]`` ids, BOS first), then ``n_slots[b]``
        placeholder ids whose embeddings are replaced by zeros (OFT's empty action embeddings), then
        padding. The output at slot k (position P + prompt_lens[b] + k) predicts action token k.
        """
        patches = self.embed_image(pixel_values)
        embeds = self.multimodal_embeds(input_ids, patches)  # [B, P + W, H]
        p = patches.shape[1]
        first = p + prompt_lens.to(embeds.device)
        pos = torch.arange(embeds.shape[1], device=embeds.device)
        slot = (pos[None] >= first[:, None]) & (pos[None] < (first + n_slots.to(embeds.device))[:, None])  # [B, L]
        embeds = embeds.masked_fill(slot[..., None], 0.0)
        if hasattr(self, "action_slots"):  # slot k of row b (position first[b] + k) holds action_slots[k]
            k = (pos[None] - first[:, None]).clamp(0, self.action_slots.shape[0] - 1)  # [B, L]
            embeds = embeds + self.action_slots.to(embeds.dtype)[k] * slot[..., None]
        return self.language_model.model(embeds, mask=parallel_mask(first, n_slots.to(embeds.device), embeds.shape[1]))

    @torch.inference_mode()
    def generate_parallel(self, patch_embeds: torch.Tensor, input_ids: torch.Tensor, n_tokens: int) -> torch.Tensor:
        """Parallel decoding: [B, P, hidden] patches + [B, T] prompt ids -> [B, n_tokens] greedy ids, all
        from one decoder pass over ``[BOS, patches, prompt[1:], n_tokens empty slots]``."""
        lm = self.language_model
        embeds = self.multimodal_embeds(input_ids, patch_embeds)  # [B, P + T, H]
        b, first = embeds.shape[0], embeds.shape[1]
        slots = self.slot_embeds(n_tokens).to(embeds.dtype)[None].expand(b, -1, -1)
        embeds = torch.cat([embeds, slots], dim=1)
        mask = parallel_mask(torch.full((b,), first, device=embeds.device),
                             torch.full((b,), n_tokens, device=embeds.device), embeds.shape[1])
        hidden = lm.model(embeds, mask=mask)[:, first:]  # [B, N, H]
        logits = lm.lm_head(hidden)  # [B, N, V]
        bad = ~torch.isfinite(logits).all(dim=-1)  # [B, N]
        if bool(bad.any()):  # argmax over NaN picks token 0: a full-scale action
            raise NonFiniteOutputError(
                f"parallel decoding: the logits of {int(bad.any(dim=0).sum())} of {n_tokens} action slots hold NaN or "
                "Inf, so this step has no safe action; the model's weights or its input are damaged (look for "
                "NaN/Inf in the checkpoint's weights and reload it from its source)"
            )
        return logits.argmax(dim=-1)

    @torch.inference_mode()
    def generate(self, patch_embeds: torch.Tensor, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding with a KV cache: [B, P, hidden] patches + [B, T] ids -> new ids [B, N]."""
        lm = self.language_model
        embeds = self.multimodal_embeds(input_ids, patch_embeds)
        length = embeds.shape[1]
        cache = KVCache(self.config.llm, embeds.shape[0], length + max_new_tokens, embeds.dtype, embeds.device)
        hidden = lm.model(embeds, 0, cache)
        logits = lm.lm_head(hidden[:, -1])  # [B, V]
        finite = [torch.isfinite(logits).all(dim=-1)]  # [B] per step, checked once at the end (no sync per token)
        token = logits.argmax(dim=-1)  # [B]
        out = [token]
        for step in range(1, max_new_tokens):
            hidden = lm.model(lm.model.embed_tokens(token)[:, None], length + step - 1, cache)
            logits = lm.lm_head(hidden[:, -1])
            finite.append(torch.isfinite(logits).all(dim=-1))
            token = logits.argmax(dim=-1)
            out.append(token)
        bad = ~torch.stack(finite, dim=1)  # [B, N]
        if bool(bad.any()):  # argmax over NaN picks token 0: a full-scale action
            first = int(bad.any(dim=0).nonzero()[0])
            raise NonFiniteOutputError(
                f"greedy decoding: the logits of generated token {first + 1} of {max_new_tokens} hold NaN or Inf, so "
                "this step has no safe action; the model's weights or its input are damaged (look for NaN/Inf in "
                "the checkpoint's weights and reload it from its source)"
            )
        return torch.stack(out, dim=1)

    def reset_non_persistent_buffers(self) -> None:
        """Rebuild buffers that checkpoints do not store (RoPE frequencies)."""
        self.language_model.model.rotary_emb.reset(self.device)


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding [grid * grid, dim], rows in raster order (MAE's form).

    Half the channels encode the row, half the column, each as sin/cos at geometric frequencies.
    """
    if dim % 4:
        raise ValueError(f"sincos_2d needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # [D/4]
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # [G, G]
    parts = []
    for c in (rows.reshape(-1), cols.reshape(-1)):
        angle = c[:, None] * omega[None]  # [G*G, D/4]
        parts += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(parts, dim=1).to(torch.float32)


def init_weights(model: OpenVLA, seed: int = 0, std: float = 0.02, sincos_pos: bool = False,
                 embed_std: float | None = None) -> None:
    """Deterministic random initialisation for tiny test models (no pretrained weights exist here).

    ``sincos_pos`` starts the towers' position embeddings at a 2-D sine-cosine table instead of
    N(0, std): a ViT trained from scratch on a few hundred thousand frames then knows where each
    patch is from the first step (its N(0, 0.02) embeddings are drowned by the patch content).
    ``embed_std`` draws the token embeddings with that std instead of ``std``.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if sincos_pos and name.endswith("pos_embed") and p.ndim == 3 and p.shape[-1] % 4 == 0:
                grid = int(round(p.shape[1] ** 0.5))
                if grid * grid == p.shape[1]:
                    p.copy_(sincos_2d(grid, p.shape[-1])[None])
                    continue
            if embed_std is not None and name.endswith("embed_tokens.weight"):
                p.normal_(0.0, embed_std, generator=gen)
            elif name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "layernorm.weight")):
                p.fill_(1.0)
            elif name.endswith("scale_factor"):
                p.fill_(0.5)  # visible residual branches; timm's 1e-5 would make random towers near-identity
            elif name.endswith("bias"):
                p.normal_(0.0, std, generator=gen)
            else:
                p.normal_(0.0, std, generator=gen)
