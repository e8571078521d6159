"""A small LongCat-Flash style MoE language model, readable top to bottom.

LongCat-Flash technical report: https://arxiv.org/abs/2509.01322
MLA attention (DeepSeek-V2): https://arxiv.org/abs/2405.04434
Layout follows nanoGPT (https://github.com/karpathy/nanoGPT/blob/master/model.py):
RMSNorm -> Attention -> (Router, Experts, MoE live in moe.py) -> Block -> ModelConfig
-> Model -> grow.

Packed rows hold several documents; ``doc_index_BT`` says which document each token
belongs to (or ``cu_seqlens`` gives the segment boundaries over the flattened rows) and
``positions_BT`` restarts at 0 with every document, so no token attends across a
document boundary and RoPE sees per-document positions. Attention never builds a
T x T mask: ``DocumentSegments`` lays the segments out as short causal sequences, so
its memory grows with T (see ``DocumentSegments`` and ``Attention``).

Shape suffixes: B batch, T sequence, D model width, H heads, C qk head dim
(nope + rope), R rope dim, V value head dim, L latent rank, E experts, N vocab.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from model_hooks.moe import GroupedExperts, MoE, Router, RouterInfo, SwiGLU
from strict_config import StrictModel


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).to(x.dtype)


def rope_cos_sin(
    positions_BT: torch.Tensor, dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Angles from per-document positions, so every document starts at angle 0."""
    inv_freq_R2 = 1.0 / theta ** (torch.arange(0, dim, 2, device=positions_BT.device) / dim)
    angles_BTR2 = positions_BT.float()[..., None] * inv_freq_R2
    angles_BTR = torch.cat([angles_BTR2, angles_BTR2], dim=-1)
    return angles_BTR.cos(), angles_BTR.sin()


def apply_rope(x_BTHR: torch.Tensor, cos_BTR: torch.Tensor, sin_BTR: torch.Tensor) -> torch.Tensor:
    x1, x2 = x_BTHR.chunk(2, dim=-1)
    rotated_BTHR = torch.cat([-x2, x1], dim=-1)
    return (x_BTHR * cos_BTR[:, :, None] + rotated_BTHR * sin_BTR[:, :, None]).to(x_BTHR.dtype)


def cu_seqlens_from_doc_index(doc_index_BT: torch.Tensor) -> torch.Tensor:
    """int32 segment boundaries over the flattened rows from per-token segment ids (a
    segment is a run of equal ids within a row), as the token stream's ``cu_seqlens``."""
    B, T = doc_index_BT.shape
    doc = doc_index_BT.cpu().numpy()
    starts = np.ones((B, T), dtype=bool)
    starts[:, 1:] = doc[:, 1:] != doc[:, :-1]
    return torch.from_numpy(np.append(np.flatnonzero(starts.reshape(-1)), B * T).astype(np.int32))


@dataclass(frozen=True)
class DocumentSegments:
    """The packed segments of a batch, laid out for block-causal attention without any
    T x T tensor.

    Segments are grouped into buckets by length (each bucket's length a power of two
    at most, so padding is under half of a bucket); a bucket is a batch of segments
    right-padded to its longest, which ordinary causal attention (``is_causal``) serves
    exactly: a real query only sees keys of its own segment at or before it, and the
    padding sits after every real key. So the memory of attention grows with the tokens
    (at most twice them, plus the kernel's own blocks), never with T^2, and the fused
    kernels (CPU flash, CUDA flash / memory-efficient) stay eligible, which a custom
    mask rules out. The layout is computed once per forward and shared by every layer.
    """

    cu_seqlens: torch.Tensor
    """int32 (S+1,) boundaries over the flattened B*T tokens (padding segments included)."""
    max_len: int
    """Longest segment (the varlen kernels want it)."""
    dest_index: torch.Tensor
    """(B*T,) slot of each token in the concatenated padded buckets."""
    buckets: tuple[tuple[int, int], ...]
    """(segments, padded length) per bucket, in buffer order."""

    @property
    def padded_tokens(self) -> int:
        return sum(n * length for n, length in self.buckets)

    @classmethod
    def from_cu_seqlens(
        cls, cu_seqlens: torch.Tensor | np.ndarray, device: torch.device, row_len: int | None = None
    ) -> DocumentSegments:
        """From boundaries ``[0, end_0, end_1, ..., B*T]`` over the flattened rows; with
        ``row_len`` every row start must be a boundary (the token stream's are)."""
        cu = np.asarray(cu_seqlens.cpu() if isinstance(cu_seqlens, torch.Tensor) else cu_seqlens)
        cu = cu.astype(np.int64)
        starts_S, lengths_S = cu[:-1], np.diff(cu)
        if len(lengths_S) == 0 or (lengths_S <= 0).any() or cu[0] != 0:
            raise ValueError("cu_seqlens must rise strictly from 0")
        if row_len is not None and not np.isin(np.arange(0, cu[-1], row_len), cu).all():
            raise ValueError(f"a segment of cu_seqlens crosses a row boundary (rows of {row_len})")
        # Bucket = bit length of (length - 1): lengths 1, 2, 3-4, 5-8, 9-16, ...
        bucket_S = np.ceil(np.log2(lengths_S)).astype(np.int64)
        base_S = np.empty(len(lengths_S), np.int64)  # buffer slot of a segment's token 0
        buckets, offset = [], 0
        for bucket in np.unique(bucket_S):
            members = np.flatnonzero(bucket_S == bucket)
            padded = int(lengths_S[members].max())
            base_S[members] = offset + np.arange(len(members)) * padded
            buckets.append((len(members), padded))
            offset += len(members) * padded
        # Token t of segment s (start_s <= t) goes to base_s + (t - start_s).
        dest_T = np.repeat(base_S - starts_S, lengths_S) + np.arange(int(cu[-1]))
        return cls(
            cu_seqlens=torch.from_numpy(cu.astype(np.int32)).to(device),
            max_len=int(lengths_S.max()),
            dest_index=torch.from_numpy(dest_T).to(device),
            buckets=tuple(buckets),
        )

    @classmethod
    def from_doc_index(cls, doc_index_BT: torch.Tensor) -> DocumentSegments:
        """From per-token segment ids: a segment is a run of equal ids within a row."""
        return cls.from_cu_seqlens(cu_seqlens_from_doc_index(doc_index_BT), doc_index_BT.device)

    def pack(self, x_NHC: torch.Tensor) -> list[torch.Tensor]:
        """Flattened tokens (N = B*T, H, C) into one (segments, H, padded, C) tensor per
        bucket, zeros in the padding. index_copy's backward is a gather: no atomics."""
        _, H, C = x_NHC.shape
        buffer = x_NHC.new_zeros(self.padded_tokens, H, C).index_copy(0, self.dest_index, x_NHC)
        sizes = [n * length for n, length in self.buckets]
        return [
            part.view(n, length, H, C).transpose(1, 2)
            for part, (n, length) in zip(buffer.split(sizes), self.buckets, strict=True)
        ]

    def unpack(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The inverse of ``pack`` for the attention outputs: (N, H, C)."""
        flat = [p.transpose(1, 2).reshape(-1, p.shape[1], p.shape[3]) for p in parts]
        return torch.cat(flat).index_select(0, self.dest_index)


def _varlen_attention() -> Callable[..., torch.Tensor] | None:
    """``torch.nn.attention.varlen.varlen_attn`` (flash, CUDA only) when this torch has it."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


ATTENTION_BACKENDS = ("auto", "segments", "varlen")
"""``segments``: ``DocumentSegments`` buckets through SDPA with ``is_causal`` (any
device); ``varlen``: flash varlen attention over ``cu_seqlens`` (CUDA, bf16/fp16, no
padding at all); ``auto``: varlen where it applies, else segments."""


def document_attention(
    q_NHC: torch.Tensor,
    k_NHC: torch.Tensor,
    v_NHV: torch.Tensor,
    segments: DocumentSegments,
    backend: str = "auto",
) -> tuple[torch.Tensor, str]:
    """Causal attention within each segment over flattened tokens (N = B*T); returns
    (N, H, V) and the backend that ran. q and k share the head dim C; v (dim V) is
    zero-padded to C for the fused kernels (which want one head dim) and cut back."""
    C, V = q_NHC.shape[-1], v_NHV.shape[-1]
    scale = 1.0 / math.sqrt(C)
    width = max(C, V)
    if width > C:  # zero dims add nothing to q.k; the scale stays 1/sqrt(C)
        q_NHC, k_NHC = F.pad(q_NHC, (0, width - C)), F.pad(k_NHC, (0, width - C))
    if width > V:
        v_NHV = F.pad(v_NHV, (0, width - V))
    varlen = _varlen_attention()
    use_varlen = backend == "varlen" or (
        backend == "auto"
        and varlen is not None
        and q_NHC.is_cuda
        and q_NHC.dtype in (torch.bfloat16, torch.float16)
    )
    if use_varlen:
        if varlen is None:
            raise RuntimeError("attention backend 'varlen' needs torch.nn.attention.varlen")
        cu = segments.cu_seqlens
        q_NHC, k_NHC, v_NHV = (t.contiguous() for t in (q_NHC, k_NHC, v_NHV))
        y_NHC = varlen(q_NHC, k_NHC, v_NHV, cu, cu, segments.max_len, segments.max_len,
                       scale=scale, window_size=(-1, 0))  # fmt: skip
        return y_NHC[..., :V], "varlen"
    if backend not in ("auto", "segments"):
        raise ValueError(f"unknown attention backend {backend!r}: one of {ATTENTION_BACKENDS}")
    q_parts, k_parts, v_parts = (segments.pack(t) for t in (q_NHC, k_NHC, v_NHV))
    y_parts = [
        F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        for q, k, v in zip(q_parts, k_parts, v_parts, strict=True)
    ]
    return segments.unpack(y_parts)[..., :V], "segments"


class Attention(nn.Module):
    """Multi-head latent attention with decoupled RoPE and LongCat's variance alignment:
    the normed q and kv latents are scaled by sqrt(d_model / rank) so that a narrow
    latent does not shrink the attention logits as the model widens."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.H, self.v = cfg.n_heads, cfg.v_head_dim
        self.nope, self.rope = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
        self.q_down = nn.Linear(cfg.d_model, cfg.q_lora_rank, bias=False)
        self.q_norm = RMSNorm(cfg.q_lora_rank, cfg.norm_eps)
        self.q_up = nn.Linear(cfg.q_lora_rank, self.H * (self.nope + self.rope), bias=False)
        # kv_down also emits the rope key, one shared by all heads.
        self.kv_down = nn.Linear(cfg.d_model, cfg.kv_lora_rank + self.rope, bias=False)
        self.kv_norm = RMSNorm(cfg.kv_lora_rank, cfg.norm_eps)
        self.kv_up = nn.Linear(cfg.kv_lora_rank, self.H * (self.nope + self.v), bias=False)
        self.out = nn.Linear(self.H * self.v, cfg.d_model, bias=False)
        self.q_scale = math.sqrt(cfg.d_model / cfg.q_lora_rank)
        self.kv_scale = math.sqrt(cfg.d_model / cfg.kv_lora_rank)
        self.kv_rank = cfg.kv_lora_rank
        self.backend = cfg.attention_backend
        self.last_backend: str | None = None  # which kernel ran last (for bench.gpu_check)

    def forward(
        self,
        x_BTD: torch.Tensor,
        cos_BTR: torch.Tensor,
        sin_BTR: torch.Tensor,
        segments: DocumentSegments,
    ) -> torch.Tensor:
        B, T, _ = x_BTD.shape
        q_BTL = self.q_norm(self.q_down(x_BTD)) * self.q_scale
        q_BTHC = self.q_up(q_BTL).view(B, T, self.H, self.nope + self.rope)
        q_nope_BTHC, q_rope_BTHR = q_BTHC.split([self.nope, self.rope], dim=-1)
        kv_BTL, k_rope_BTR = self.kv_down(x_BTD).split([self.kv_rank, self.rope], dim=-1)
        kv_BTHC = self.kv_up(self.kv_norm(kv_BTL) * self.kv_scale)
        kv_BTHC = kv_BTHC.view(B, T, self.H, self.nope + self.v)
        k_nope_BTHC, v_BTHV = kv_BTHC.split([self.nope, self.v], dim=-1)
        q_rope_BTHR = apply_rope(q_rope_BTHR, cos_BTR, sin_BTR)
        k_rope_BTHR = apply_rope(k_rope_BTR[:, :, None], cos_BTR, sin_BTR)
        k_rope_BTHR = k_rope_BTHR.expand(B, T, self.H, self.rope)
        q_NHC = torch.cat([q_nope_BTHC, q_rope_BTHR], dim=-1).flatten(0, 1)
        k_NHC = torch.cat([k_nope_BTHC, k_rope_BTHR], dim=-1).flatten(0, 1)
        v_NHV = v_BTHV.flatten(0, 1)
        y_NHV, self.last_backend = document_attention(q_NHC, k_NHC, v_NHV, segments, self.backend)
        return self.out(y_NHV.reshape(B, T, self.H * self.v))


class Block(nn.Module):
    """One ScMoE layer: two attention blocks, two dense FFNs and one MoE whose input is
    FFN0's input and whose output joins only at the last add. That late join is what
    lets the expert all-to-all overlap the dense blocks on a cluster."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        D, eps = cfg.d_model, cfg.norm_eps
        self.attn_norm0, self.attn0 = RMSNorm(D, eps), Attention(cfg)
        self.ffn_norm0, self.ffn0 = RMSNorm(D, eps), SwiGLU(D, cfg.d_ffn)
        self.attn_norm1, self.attn1 = RMSNorm(D, eps), Attention(cfg)
        self.ffn_norm1, self.ffn1 = RMSNorm(D, eps), SwiGLU(D, cfg.d_ffn)
        self.moe = MoE(
            D, cfg.d_expert, cfg.n_ffn_experts, cfg.n_zero_experts, cfg.top_k, cfg.gamma,
            cfg.gamma_scales_identity,
        )  # fmt: skip

    def route(
        self,
        x_BTD: torch.Tensor,
        cos_BTR: torch.Tensor,
        sin_BTR: torch.Tensor,
        segments: DocumentSegments,
    ) -> RouterInfo:
        """The routing ``forward`` would make, computing only what the router reads."""
        a1_BTD = x_BTD + self.attn0(self.attn_norm0(x_BTD), cos_BTR, sin_BTR, segments)
        return self.moe.router(self.ffn_norm0(a1_BTD).flatten(0, 1))

    def forward(
        self,
        x_BTD: torch.Tensor,
        cos_BTR: torch.Tensor,
        sin_BTR: torch.Tensor,
        segments: DocumentSegments,
    ) -> tuple[torch.Tensor, RouterInfo]:
        B, T, D = x_BTD.shape
        a1_BTD = x_BTD + self.attn0(self.attn_norm0(x_BTD), cos_BTR, sin_BTR, segments)
        u_BTD = self.ffn_norm0(a1_BTD)
        m_TD, info = self.moe(u_BTD.reshape(B * T, D))  # starts from FFN0's input
        f1_BTD = a1_BTD + self.ffn0(u_BTD)
        a2_BTD = f1_BTD + self.attn1(self.attn_norm1(f1_BTD), cos_BTR, sin_BTR, segments)
        out_BTD = a2_BTD + self.ffn1(self.ffn_norm1(a2_BTD)) + m_TD.view(B, T, D)
        return out_BTD, info


class ModelConfig(StrictModel):
    """Everything that fixes the architecture; saved as ``model_config`` in checkpoints.
    Defaults are a toy that trains on a laptop CPU."""

    vocab_size: int = Field(default=256, gt=0)
    d_model: int = Field(default=64, gt=0)
    n_layers: int = Field(default=2, gt=0)
    """ScMoE layers; each holds two attention blocks, two dense FFNs and one MoE."""
    n_heads: int = Field(default=4, gt=0)
    q_lora_rank: int = Field(default=32, gt=0)
    kv_lora_rank: int = Field(default=16, gt=0)
    qk_nope_head_dim: int = Field(default=16, gt=0)
    qk_rope_head_dim: int = Field(default=8, gt=0)
    """Rope part of each head; even, since RoPE rotates pairs."""
    v_head_dim: int = Field(default=16, gt=0)
    rope_theta: float = Field(default=1.0e6, gt=0)
    """RoPE base. LongCat-Flash pre- and mid-trains with 1e6 and raises it per
    long-context phase (5e6 at 32k, 1e7 at 128k: a first jump of 5x, not 500x from the
    1e4 of older recipes); a phase's manifest sets it per batch."""
    d_ffn: int = Field(default=128, gt=0)
    """Dense SwiGLU width."""
    d_expert: int = Field(default=32, gt=0)
    n_ffn_experts: int = Field(default=8, gt=0)
    n_zero_experts: int = Field(default=4, ge=0)
    top_k: int = Field(default=3, gt=0)
    target_ffn_experts: float = Field(default=2.0, gt=0)
    """K_e: the mean FFN experts per token the bias controller steers to."""
    moe_gamma: float | None = Field(default=None, gt=0)
    """Output scale gamma; None means d_ffn / d_expert (LongCat's variance alignment)."""
    gamma_scales_identity: bool = True
    """Whether gamma also scales zero-expert outputs (transformers/vLLM: yes; SGLang: no)."""
    norm_eps: float = Field(default=1e-6, gt=0)
    init_std: float = Field(default=0.02, gt=0)
    """Init std of the hidden matrices and the unembedding (residual output projections
    get init_std / sqrt(5 n_layers)). Width transfer divides it by sqrt(width ratio)."""
    attention_backend: Literal["auto", "segments", "varlen"] = "auto"
    """Document-causal attention kernel (``ATTENTION_BACKENDS``); never a dense mask."""
    embed_init_std: float | None = Field(default=None, gt=0)
    """Init std of the token embedding; None means init_std. Width transfer keeps the
    proxy's, since the embedding's fan-in (one-hot) does not grow with the width."""

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.qk_rope_head_dim % 2:
            raise ValueError("qk_rope_head_dim must be even")
        if self.top_k > self.n_ffn_experts + self.n_zero_experts:
            raise ValueError("top_k exceeds the number of experts")
        if self.target_ffn_experts > self.top_k:
            raise ValueError("target_ffn_experts (K_e) cannot exceed top_k")
        if self.n_zero_experts == 0 and self.target_ffn_experts != self.top_k:
            raise ValueError("without zero experts every pick is an FFN expert: K_e = top_k")
        return self

    @property
    def gamma(self) -> float:
        return self.moe_gamma if self.moe_gamma is not None else self.d_ffn / self.d_expert

    @property
    def embedding_std(self) -> float:
        return self.embed_init_std if self.embed_init_std is not None else self.init_std


class Model(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        # nanoGPT's scaled init: each residual branch's output projection shrinks with
        # the number of branches (five per ScMoE layer) so the residual stream stays O(1).
        out_std = cfg.init_std / math.sqrt(5 * cfg.n_layers)
        for name, p in self.named_parameters():
            if name.endswith(("out.weight", "w_down.weight", "experts.w_down")):
                nn.init.normal_(p, mean=0.0, std=out_std)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.embedding_std)
        elif isinstance(module, nn.Linear | Router):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)
        elif isinstance(module, GroupedExperts):
            for weight in (module.w_gate, module.w_up, module.w_down):
                nn.init.normal_(weight, mean=0.0, std=self.cfg.init_std)

    def forward(
        self,
        tokens_BT: torch.Tensor,
        positions_BT: torch.Tensor,
        doc_index_BT: torch.Tensor,
        cu_seqlens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[RouterInfo]]:
        """Returns logits, the last hidden state before the final norm (for the hidden
        z-loss) and each layer's routing (for the balance loss and the metrics).
        ``cu_seqlens`` (the token stream's segment boundaries over the flattened rows)
        spares deriving them from ``doc_index_BT``; either gives the same segments."""
        x_BTD, infos = self._layers(tokens_BT, positions_BT, doc_index_BT, cu_seqlens)
        logits_BTN = self.lm_head(self.norm(x_BTD))
        return logits_BTN, x_BTD, infos

    def routing(
        self,
        tokens_BT: torch.Tensor,
        positions_BT: torch.Tensor,
        doc_index_BT: torch.Tensor,
        cu_seqlens: torch.Tensor | None = None,
        steer: Callable[[Router, RouterInfo], None] | None = None,
    ) -> list[RouterInfo]:
        """Each layer's routing of a batch, without the final norm and the unembedding
        (most of a toy model's forward: the vocabulary is far wider than the model) and
        without what follows the last router.

        ``steer(router, info)``, when given, runs in each layer just before its router
        picks, with the routing the router would make of its input now (``info``); it may
        move the router's biases, and the layer then routes with the moved ones. So a
        bias controller steers layer by layer in one pass, each layer from the input
        that the layers below give with their steered routing (the bias controller
        re-routes the batch this way after the optimiser step)."""
        if steer is None:
            return self._layers(tokens_BT, positions_BT, doc_index_BT, cu_seqlens, True)[1]

        def before_pick(router: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            steer(router, router.forward(args[0]))  # forward: no hooks, no recursion

        routers = [layer.moe.router for layer in self.layers]
        handles = [router.register_forward_pre_hook(before_pick) for router in routers]
        try:
            return self._layers(tokens_BT, positions_BT, doc_index_BT, cu_seqlens, True)[1]
        finally:
            for handle in handles:
                handle.remove()

    def _layers(
        self,
        tokens_BT: torch.Tensor,
        positions_BT: torch.Tensor,
        doc_index_BT: torch.Tensor,
        cu_seqlens: torch.Tensor | None,
        route_only: bool = False,
    ) -> tuple[torch.Tensor, list[RouterInfo]]:
        """The embedding and every layer: the last hidden state and each layer's routing
        (``route_only``: the last layer only as far as its router)."""
        if cu_seqlens is not None:
            segments = DocumentSegments.from_cu_seqlens(
                cu_seqlens, tokens_BT.device, row_len=tokens_BT.shape[1]
            )
            if int(segments.cu_seqlens[-1]) != tokens_BT.numel():
                raise ValueError("cu_seqlens does not end at B*T")
        else:
            segments = DocumentSegments.from_doc_index(doc_index_BT)
        cos_BTR, sin_BTR = rope_cos_sin(
            positions_BT, self.cfg.qk_rope_head_dim, self.cfg.rope_theta
        )
        x_BTD = self.embed(tokens_BT)
        infos = []
        for index, layer in enumerate(self.layers):
            if route_only and index == len(self.layers) - 1:
                infos.append(layer.route(x_BTD, cos_BTR, sin_BTR, segments))
                return x_BTD, infos  # the last layer's input: nothing reads it
            x_BTD, info = layer(x_BTD, cos_BTR, sin_BTR, segments)
            infos.append(info)
        return x_BTD, infos


ParameterKind = Literal["embedding", "hidden", "vector"]


def parameter_kind(name: str, param: torch.Tensor) -> ParameterKind:
    """The width-transfer class of a parameter: the token embedding, a hidden matrix
    (attention, FFNs, experts, router and the unembedding ``lm_head``: their fan-in is
    the width), or a vector (norm gains)."""
    if param.ndim < 2:
        return "vector"
    return "embedding" if name == "embed.weight" else "hidden"


_LAYER = re.compile(r"^layers\.(\d+)\.")


def grow(model: Model, optimizer_state: dict | None = None) -> tuple[Model, dict | None]:
    """Model growth: a model of twice the depth whose layers are 1..n then 1..n again,
    with every Adam moment copied to both copies, so training continues from the same
    step and schedule. ``optimizer_state`` must come from an optimiser built with named
    parameters (its groups carry ``param_names``)."""
    n = model.cfg.n_layers
    big = Model(model.cfg.model_copy(update={"n_layers": 2 * n})).to(
        next(model.parameters()).device
    )
    old_sd = model.state_dict()

    def source(name: str) -> str:
        return _LAYER.sub(lambda m: f"layers.{int(m.group(1)) % n}.", name)

    big.load_state_dict({k: old_sd[source(k)].clone() for k in big.state_dict()})
    if optimizer_state is None:
        return big, None
    old_ids: dict[str, int] = {}
    for group in optimizer_state["param_groups"]:
        if "param_names" not in group:
            raise ValueError("grow needs an optimiser built from model.named_parameters()")
        old_ids.update(zip(group["param_names"], group["params"], strict=True))
    new_groups, new_state, next_id = [], {}, 0
    for group in optimizer_state["param_groups"]:
        members = set(group["param_names"])
        names = [k for k, _ in big.named_parameters() if source(k) in members]
        ids = list(range(next_id, next_id + len(names)))
        next_id += len(names)
        for new_id, name in zip(ids, names, strict=True):
            moments = optimizer_state["state"].get(old_ids[source(name)])
            if moments is not None:
                new_state[new_id] = {k: v.clone() for k, v in moments.items()}
        new_groups.append({**group, "params": ids, "param_names": names})
    return big, {"state": new_state, "param_groups": new_groups}
