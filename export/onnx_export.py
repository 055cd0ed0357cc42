"""The three deployment graphs as torch modules, written for export (static cache, argmax inside).

They reuse the weights of ``export.model.OpenVLA`` (no copies) and re-state only the parts of the
forward pass whose form matters to an inference engine:

- **vision**: pixel_values [1, 3 * n_towers, S, S] float32 -> projected patches [1, P, hidden].
- **prefill**: embeddings of ``[BOS, patches, prompt]`` [1, T, hidden] (or, with in-graph
  embeddings, input_ids [1, T_ids] + patches) -> first token, its logits and the keys/values of
  every position ``present_{key,value}_{i}`` [1, Hkv_i, T, D].
- **decode**: the previous token (its embedding [1, 1, hidden], or its id [1, 1]) + ``position``
  [1] + the static cache ``past_{key,value}_{i}`` [1, Hkv_i, S_max, D] -> next token, its logits
  and only this step's keys/values ``key_{i}``/``value_{i}`` [1, Hkv_i, 1, D]. The runtime owns
  the cache buffer and writes the new row at ``position``; positions >= ``position`` are masked,
  so the buffer's stale tail is never read. Returning one row instead of the whole cache keeps
  each step's traffic at the weights plus one cache read.

Grouped-query attention is computed by reshaping the queries to [B, Hkv, groups, T, D] and
broadcasting against [B, Hkv, 1, S, D] keys, so the cache is never repeated in memory. Softmax
runs in float32 whatever the weights' dtype. Layers whose attention (or MLP) was pruned away
entirely have no cache tensors (and no MLP), exactly as ``export.model`` skips them.

The action-only head keeps lm_head rows ``[vocab - n_bins, vocab)`` (31744..31999 for OpenVLA) and
adds the offset back after the argmax; it equals the full-vocabulary argmax whenever the full
argmax is an action token, which is what a trained OpenVLA emits at every action position.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from export.model import LlamaDecoderLayer, OpenVLA, rotate_half


class VisionGraph(nn.Module):
    """pixel_values [1, 3 * n_towers, S, S] float32 -> patches [1, P, hidden] (model dtype)."""

    def __init__(self, model: OpenVLA) -> None:
        super().__init__()
        self.vision_backbone = model.vision_backbone
        self.projector = model.projector
        self.dtype = model.dtype

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projector(self.vision_backbone(pixel_values.to(self.dtype)))


class _LLMGraph(nn.Module):
    """What prefill and decode share: layers, final norm, RoPE, the (possibly sliced) head."""

    def __init__(self, model: OpenVLA, action_head: bool, embeddings_in_graph: bool) -> None:
        super().__init__()
        cfg = model.config
        lm = model.language_model
        self.layers = lm.model.layers
        self.norm = lm.model.norm
        self.head_dim = cfg.llm.head_dim
        self.embeddings_in_graph = embeddings_in_graph
        if embeddings_in_graph:
            self.embed_tokens = lm.model.embed_tokens
        # RoPE frequencies as a constant of the graph (float32, as the model computes them).
        self.register_buffer("inv_freq", lm.model.rotary_emb.inv_freq.detach().clone().float(), persistent=False)
        if action_head:
            first = cfg.token_vocab_size - cfg.n_action_bins
            self.head_offset = first
            self.lm_head_weight = nn.Parameter(lm.lm_head.weight[first : cfg.token_vocab_size].detach().clone(),
                                               requires_grad=False)  # [n_bins, hidden]
        else:
            self.head_offset = 0
            self.lm_head_weight = lm.lm_head.weight  # [vocab, hidden]
        # Layers that keep attention own a cache; their indices fix the order of cache tensors.
        self.cache_layers = [i for i, layer in enumerate(self.layers) if layer.has_attn]

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [T] int64 -> cos, sin [1, 1, T, D] in ``dtype`` (angles in float32)."""
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]  # [T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[None, None], emb.sin().to(dtype)[None, None]

    def qkv(self, layer: LlamaDecoderLayer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x [1, T, hidden] -> q [1, Hkv, G, T, D], k, v [1, Hkv, T, D] (RoPE applied to q, k)."""
        attn = layer.self_attn
        b, t, _ = x.shape
        h = layer.input_layernorm(x)
        q = attn.q_proj(h).view(b, t, attn.num_heads, self.head_dim).transpose(1, 2)  # [1, H, T, D]
        k = attn.k_proj(h).view(b, t, attn.num_kv_heads, self.head_dim).transpose(1, 2)  # [1, Hkv, T, D]
        v = attn.v_proj(h).view(b, t, attn.num_kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        groups = attn.num_heads // attn.num_kv_heads
        # query head h reads kv head h // groups (HF repeat_kv), i.e. consecutive heads share one kv head
        q = q.reshape(b, attn.num_kv_heads, groups, t, self.head_dim)
        return q, k, v

    def attn_out(self, layer: LlamaDecoderLayer, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out [1, Hkv, G, T, D] -> residual x + o_proj(out)."""
        attn = layer.self_attn
        b, t = x.shape[0], x.shape[1]
        out = out.reshape(b, attn.num_heads, t, self.head_dim).transpose(1, 2).reshape(b, t, attn.num_heads * self.head_dim)
        return x + attn.o_proj(out)

    def mlp(self, layer: LlamaDecoderLayer, x: torch.Tensor) -> torch.Tensor:
        if not layer.has_mlp:
            return x
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def head(self, hidden_last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden of the last position [1, hidden] -> (token [1] int64, logits [1, V'] float32)."""
        logits = F.linear(self.norm(hidden_last), self.lm_head_weight).float()
        token = logits.argmax(dim=-1) + self.head_offset
        return token, logits


class PrefillGraph(_LLMGraph):
    """[BOS, patches, prompt] -> first token, logits, present keys/values of every cached layer."""

    def forward(self, *inputs: torch.Tensor):
        if self.embeddings_in_graph:
            input_ids, patches = inputs  # [1, T_ids] int64, [1, P, hidden]
            tok = self.embed_tokens(input_ids)
            x = torch.cat([tok[:, :1], patches.to(tok.dtype), tok[:, 1:]], dim=1)  # [1, T, hidden]
        else:
            (x,) = inputs  # [1, T, hidden]
        t = x.shape[1]
        positions = torch.arange(t, device=x.device)
        cos, sin = self.rope(positions, x.dtype)
        scale = self.head_dim**-0.5
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()  # [T, T]
        presents: list[torch.Tensor] = []
        for layer in self.layers:
            if layer.has_attn:
                q, k, v = self.qkv(layer, x, cos, sin)
                scores = torch.matmul(q, k.unsqueeze(2).transpose(-1, -2)).float() * scale  # [1, Hkv, G, T, T]
                scores = scores.masked_fill(~causal, float("-inf"))
                probs = scores.softmax(dim=-1).to(v.dtype)
                out = torch.matmul(probs, v.unsqueeze(2))  # [1, Hkv, G, T, D]
                x = self.attn_out(layer, x, out)
                presents += [k, v]
            x = self.mlp(layer, x)
        token, logits = self.head(x[:, -1])
        return (token, logits, *presents)


class DecodeGraph(_LLMGraph):
    """previous token + position + static cache -> next token, logits, this step's keys/values."""

    def forward(self, token_in: torch.Tensor, position: torch.Tensor, *past: torch.Tensor):
        if self.embeddings_in_graph:
            x = self.embed_tokens(token_in)  # [1, 1] int64 -> [1, 1, hidden]
        else:
            x = token_in  # [1, 1, hidden]
        max_len = past[0].shape[2]
        cos, sin = self.rope(position, x.dtype)  # position [1] int64
        scale = self.head_dim**-0.5
        valid = torch.arange(max_len, device=x.device) < position  # [S_max] bool: cached positions
        news: list[torch.Tensor] = []
        c = 0
        for layer in self.layers:
            if layer.has_attn:
                past_k, past_v = past[2 * c], past[2 * c + 1]  # [1, Hkv, S_max, D]
                c += 1
                q, k, v = self.qkv(layer, x, cos, sin)  # q [1, Hkv, G, 1, D], k/v [1, Hkv, 1, D]
                s_past = torch.matmul(q, past_k.unsqueeze(2).transpose(-1, -2)).float() * scale  # [1, Hkv, G, 1, S_max]
                s_past = s_past.masked_fill(~valid, float("-inf"))
                s_self = torch.matmul(q, k.unsqueeze(2).transpose(-1, -2)).float() * scale  # [1, Hkv, G, 1, 1]
                probs = torch.cat([s_past, s_self], dim=-1).softmax(dim=-1).to(v.dtype)
                out = torch.matmul(probs[..., :max_len], past_v.unsqueeze(2)) + probs[..., max_len:] * v.unsqueeze(2)
                x = self.attn_out(layer, x, out)
                news += [k, v]
            x = self.mlp(layer, x)
        token, logits = self.head(x[:, -1])
        return (token, logits, *news)
