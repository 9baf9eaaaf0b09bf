"""The Wan DiT with original key names, made causal: per-frame timesteps and a chunk-wise KV cache.

One forward takes a latent chunk x [B, C, F, H, W] at frame offset `start_frame`, per-frame timesteps t [B, F]
(or [B]) in [0, 1000], and text (or a precomputed cross-attention cache), and returns the flow velocity
v = noise - x0 with the shape of x. With a KVCache the chunk attends to itself and to everything cached; without
one it attends bidirectionally within x, optionally under a block mask (the training-time equivalent).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import WanConfig
from .kv_cache import KVCache
from .rope import apply_rope, rope_table


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the weight dtype."""

    def forward(self, x):
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)

    def modulated(self, x, shift, scale):
        """norm(x) * (1 + scale) + shift (no affine weights of its own). Where the modulation is one vector for
        every token (a batch of one at one timestep for all its frames) it is the layer norm's own affine: one
        pass over x; otherwise the norm, then one fused multiply-add."""
        if self.weight is None and shift.numel() == x.shape[-1]:
            return F.layer_norm(x.float(), self.normalized_shape, (1 + scale).reshape(-1), shift.reshape(-1), self.eps)
        return torch.addcmul(shift, self(x), 1 + scale)


class RMSNorm(nn.Module):
    """x rsqrt(|x|^2 / dim + eps) weight over the last dim, computed in float32 (|x| is one fused reduction: no
    squared copy of x).

    inplace: where autograd does not track x, normalise a float32 x itself instead of a new tensor; for an input
    nothing else reads afterwards (a projection's fresh output)."""

    def __init__(self, dim: int, eps: float, inplace: bool = False):
        super().__init__()
        self.eps = eps
        self.inplace = inplace
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        r = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).square().div(xf.shape[-1]).add(self.eps).rsqrt()
        tracked = torch.is_grad_enabled() and (xf.requires_grad or self.weight.requires_grad)
        if tracked or self.weight.dtype != x.dtype:
            return (xf * r).to(x.dtype) * self.weight
        y = xf.mul_(r) if self.inplace or xf is not x else xf * r  # (x.float() of a bf16 x is a copy already)
        return y.to(x.dtype).mul_(self.weight)


class TanhGELU(nn.GELU):
    """GELU, tanh approximation: 0.5 x (1 + tanh u), u = sqrt(2/pi) (x + 0.044715 x^3). On the CPU in float32 it
    is computed as the equal x sigmoid(2u) (within 5e-7): torch's CPU kernel of the tanh form takes about twice as
    long (0.72 against 0.38 ms on 288 x 1536, one thread). Its gradient is torch's own tanh-GELU gradient, and a
    forward under autograd gives the very values of one without. Elsewhere (CUDA, bf16) torch's kernel.

    inplace (as nn.ReLU's): where autograd does not track x, overwrite x, a few rows at a time, instead of
    allocating a result as large as x; for an input nothing else reads afterwards (the hidden layer of an FFN)."""

    def __init__(self, inplace: bool = False):
        super().__init__(approximate="tanh")
        self.inplace = inplace

    def forward(self, x):
        if x.device.type != "cpu" or x.dtype != torch.float32:
            return super().forward(x)
        if torch.is_grad_enabled() and x.requires_grad:
            return _SigmoidFormGELU.apply(x)
        if self.inplace and x.is_contiguous():
            return sigmoid_form_gelu_(x)
        return sigmoid_form_gelu(x)


def _gelu_gate(x: torch.Tensor) -> torch.Tensor:
    """sigmoid(2u), 2u = C x + C 0.044715 x^3 (C = 2 sqrt(2/pi)), in place on one new tensor."""
    c = 2 * (2 / math.pi) ** 0.5
    return torch.addcmul(x.new_tensor(c), x, x, value=c * 0.044715).mul_(x).sigmoid_()


def sigmoid_form_gelu(x: torch.Tensor) -> torch.Tensor:
    """x sigmoid(2u) as a new tensor."""
    return _gelu_gate(x).mul_(x)


_GELU_ROWS_ELEMENTS = 1 << 16  # elements per slice of the in-place form: its gate (256 KiB) stays in cache


def sigmoid_form_gelu_(x: torch.Tensor) -> torch.Tensor:
    """x sigmoid(2u) written into contiguous x, slice by slice of rows, so the only temporary is one slice's gate
    (a result as large as x would be fresh memory the system must map and zero on every call). The very values of
    sigmoid_form_gelu."""
    rows = x.view(-1, x.shape[-1])
    for part in rows.split(max(1, _GELU_ROWS_ELEMENTS // max(1, x.shape[-1]))):
        part.mul_(_gelu_gate(part))
    return x


class _SigmoidFormGELU(torch.autograd.Function):
    """sigmoid_form_gelu with torch's tanh-GELU gradient (saves only x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sigmoid_form_gelu(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.ops.aten.gelu_backward(grad, x, approximate="tanh")


def heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """[B, L, n*D] -> [B, n, L, D]"""
    return x.unflatten(-1, (n, -1)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).flatten(2)


class Attention(nn.Module):
    """Projections q, k, v, o and the q/k RMSNorms (across heads) shared by self- and cross-attention."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        d = cfg.dim
        self.n = cfg.num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        # their inputs are the q/k projections' fresh outputs: without autograd they are normalised in place
        self.norm_q, self.norm_k = RMSNorm(d, cfg.eps, inplace=True), RMSNorm(d, cfg.eps, inplace=True)


class SelfAttention(Attention):
    def forward(self, x, layer: int, ctx: dict):
        q = heads(self.norm_q(self.q(x)), self.n)
        k = heads(self.norm_k(self.k(x)), self.n)
        v = heads(self.v(x), self.n)
        if ctx.get("cache") is not None:
            # q and k are read nowhere else: rotated in place where autograd does not track them
            out = ctx["cache"].attend(layer, ctx["plan"], q, k, v, owned=True)
        else:
            rot = ctx["rope"]
            q, k = apply_rope(q, rot, inplace=True), apply_rope(k, rot, inplace=True)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.get("mask"))
        return self.o(merge_heads(out))


class CrossAttention(Attention):
    def __init__(self, cfg: WanConfig):
        super().__init__(cfg)
        d = cfg.dim
        self.image_branch = cfg.image_branch
        if cfg.image_branch:
            self.k_img, self.v_img = nn.Linear(d, d), nn.Linear(d, d)
            self.norm_k_img = RMSNorm(d, cfg.eps, inplace=True)

    def kv(self, text: torch.Tensor, image: torch.Tensor | None) -> dict:
        """Keys/values of the conditioning; computed once per prompt and reused for every chunk."""
        out = {"k": heads(self.norm_k(self.k(text)), self.n), "v": heads(self.v(text), self.n)}
        if self.image_branch and image is not None:
            out["k_img"] = heads(self.norm_k_img(self.k_img(image)), self.n)
            out["v_img"] = heads(self.v_img(image), self.n)
        return out

    def forward(self, x, kv: dict):
        q = heads(self.norm_q(self.q(x)), self.n)
        out = F.scaled_dot_product_attention(q, kv["k"].to(q.dtype), kv["v"].to(q.dtype))
        if "k_img" in kv:
            out = out + F.scaled_dot_product_attention(q, kv["k_img"].to(q.dtype), kv["v_img"].to(q.dtype))
        return self.o(merge_heads(out))


class Block(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        d = cfg.dim
        self.norm1 = FP32LayerNorm(d, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(cfg)
        self.norm3 = FP32LayerNorm(d, cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(cfg)
        self.norm2 = FP32LayerNorm(d, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(d, cfg.ffn_dim), TanhGELU(inplace=True), nn.Linear(cfg.ffn_dim, d))
        self.modulation = nn.Parameter(torch.randn(1, 6, d) / d ** 0.5)

    def forward(self, x, e0, layer: int, ctx: dict, cross_kv):
        """x [B, F, T, dim] float32 residual stream; e0 [B, F or 1, 6, dim] float32; cross_kv: this layer's cached
        cross-attention keys/values, or the embedded (text, image) to project here (so a sharded block, FSDP,
        only ever touches its own weights inside its forward)."""
        if isinstance(cross_kv, tuple):  # the class's kv: an offload policy's wrapper of it would place (and
            cross_kv = CrossAttention.kv(self.cross_attn, *cross_kv)  # evict) this block inside its own forward
        # fp8-stored linears (causal/model/fp8_storage.py, issue 7) hold e4m3fn weights but compute in compute_dtype
        dt = getattr(self.ffn[0], "compute_dtype", self.ffn[0].weight.dtype)
        mod = (self.modulation.float().unsqueeze(1) + e0).unsqueeze(3)  # [B, F or 1, 6, 1, dim]
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.unbind(2)
        y = self.norm1.modulated(x, shift1, scale1)
        y = self.self_attn(y.flatten(1, 2).to(dt), layer, ctx).float().view_as(x)
        x = torch.addcmul(x, y, gate1)  # a new tensor: the caller's x stays as it was
        # without autograd the later residual updates write into that new tensor (under grad, norms saved it)
        inplace = not torch.is_grad_enabled()
        y = self.cross_attn(self.norm3(x).flatten(1, 2).to(dt), cross_kv).float().view_as(x)
        x = x.add_(y) if inplace else x + y
        y = self.norm2.modulated(x, shift2, scale2)
        y = self.ffn(y.flatten(1, 2).to(dt)).float().view_as(x)
        return x.addcmul_(y, gate2) if inplace else torch.addcmul(x, y, gate2)


class Head(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        d = cfg.dim
        self.norm = FP32LayerNorm(d, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(d, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, d) / d ** 0.5)

    def forward(self, x, e):
        shift, scale = (self.modulation.float().unsqueeze(1) + e.unsqueeze(2)).unsqueeze(3).unbind(2)
        y = self.norm.modulated(x, shift, scale)
        return self.head(y.to(self.head.weight.dtype))


class ImageEmbedding(nn.Module):
    """Wan2.1 I2V projection of CLIP-vision features (keys img_emb.proj.{0,1,3,4})."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        c = cfg.clip_dim
        self.proj = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, c), nn.GELU(), nn.Linear(c, cfg.dim),
                                  nn.LayerNorm(cfg.dim))

    def forward(self, x):
        return self.proj(x)


def sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Timestep embedding, cos first, computed in float64: t [...] -> [..., dim]."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    args = t.to(torch.float64)[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class CausalWanModel(nn.Module):
    """One Wan expert. State-dict keys are the original Wan names."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.config = cfg
        d = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, d, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, d), TanhGELU(), nn.Linear(d, d))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        if cfg.image_branch:
            self.img_emb = ImageEmbedding(cfg)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    # ----------------------------------------------------------------- conditioning
    def pad_text(self, context: torch.Tensor) -> torch.Tensor:
        """Zero-pad text embeddings [B, L, text_dim] to text_len tokens (all of them are attended)."""
        cfg = self.config
        if context.dim() != 3 or context.shape[-1] != cfg.text_dim:
            raise ValueError(f"text conditioning must be [batch, tokens, {cfg.text_dim}] for this model, got "
                             f"{list(context.shape)}; is the text encoder the one this model was trained with (umT5)?")
        if context.shape[1] > cfg.text_len:
            raise ValueError(f"text has {context.shape[1]} tokens; this model takes at most {cfg.text_len}")
        return F.pad(context, (0, 0, 0, cfg.text_len - context.shape[1]))

    @torch.no_grad()
    def cross_kv(self, context: torch.Tensor, clip_fea: torch.Tensor | None = None) -> list[dict]:
        """Cross-attention keys/values for every layer (the cross-attention cache of a prompt). A sharded model
        (FSDP2 fully_shard, training) gathers its weights for this call: every process must call it together."""
        sharded = [m for m in (self, *self.blocks) if hasattr(m, "unshard")]
        for m in sharded:
            m.unshard()
        try:
            return self._cross_kv(context, clip_fea)
        finally:
            for m in sharded:
                m.reshard()

    def _cross_kv(self, context, clip_fea):
        text, image = self._embed_text(context, clip_fea)
        return [blk.cross_attn.kv(text, image) for blk in self.blocks]

    def _embed_text(self, context, clip_fea):
        text = self.text_embedding(self.pad_text(context).to(device=self.device, dtype=self.dtype))
        image = None
        if clip_fea is not None:
            if not self.config.image_branch:
                raise ValueError("CLIP-vision features were given but this model has no image branch (img_emb)")
            image = self.img_emb(clip_fea.to(device=self.device, dtype=self.dtype))
        elif self.config.image_branch:
            raise ValueError("this model has a Wan2.1 I2V image branch and needs CLIP-vision features (clip_fea)")
        return text, image

    # ----------------------------------------------------------------- forward
    def check_input(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        cfg = self.config
        if x.dim() != 5:
            raise ValueError(f"latent must be [batch, channels, frames, height, width], got {list(x.shape)}")
        ch = x.shape[1] + (0 if y is None else y.shape[1])
        if ch != cfg.in_dim:
            raise ValueError(f"this model takes {cfg.in_dim} input channels, got {x.shape[1]} latent"
                             f"{'' if y is None else f' + {y.shape[1]} condition'} channels")
        pt, ph, pw = cfg.patch_size
        f, h, w = x.shape[2:]
        if f % pt or h % ph or w % pw:
            raise ValueError(f"latent frames/height/width {f}x{h}x{w} do not fit the patch size {cfg.patch_size}; "
                             f"pixel height and width must be multiples of {8 * ph}")

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None, *,
                cross_kv: list | None = None, clip_fea: torch.Tensor | None = None, y: torch.Tensor | None = None,
                cache: KVCache | None = None, start_frame: int = 0, attn_mask: torch.Tensor | None = None):
        cfg = self.config
        self.check_input(x, y)
        if start_frame < 0:
            raise ValueError(f"start_frame must be >= 0, got {start_frame}")
        b, _, f, h, w = x.shape
        pt, ph, pw = cfg.patch_size
        fp, hp, wp = f // pt, h // ph, w // pw
        if y is not None:
            x = torch.cat([x, y.to(x)], dim=1)
        # patch tokens [B, dim, F', H', W'] -> the residual stream [B, F', T, dim] float32, made contiguous here once
        # (every block reads and writes it row by row); the patch tokens themselves are not kept
        xs = self.patch_embedding(x.to(self.dtype)).flatten(3).permute(0, 2, 3, 1).contiguous().float()

        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(b)
        if t.dim() == 1:  # one timestep for all frames of a sample: embedded once, broadcast over the frames
            t = t[:, None]
        if t.dim() != 2 or t.shape[0] != b or t.shape[1] not in (1, fp):
            raise ValueError(f"timesteps must be [batch] or [batch, frames]=[{b}, {fp}], got {list(t.shape)}")
        with torch.autocast(x.device.type, enabled=False):
            e = self.time_embedding(sinusoid(t, cfg.freq_dim).to(self.dtype)).float()  # [B, F or 1, dim]
            e0 = self.time_projection(e.to(self.dtype)).float().unflatten(-1, (6, cfg.dim))

        if cross_kv is None:
            if context is None:
                raise ValueError("give either text conditioning (context) or a cross-attention cache (cross_kv)")
            ctx_text = self._embed_text(context, clip_fea)  # each block projects it in its own forward

        ctx: dict = {}
        if cache is not None:
            if attn_mask is not None:
                raise ValueError("attn_mask is for whole-clip forwards; a KV-cached forward is block-causal already")
            ctx["cache"] = cache
            ctx["plan"] = cache.plan(start_frame, fp, b, cfg.num_heads, cfg.head_dim, hp, wp, x.device, self.dtype)
        else:
            ctx["rope"] = rope_table(range(start_frame, start_frame + fp), hp, wp, cfg.head_dim, cfg.rope_table,
                                     device=x.device)
            ctx["mask"] = attn_mask
        for i, blk in enumerate(self.blocks):
            xs = blk(xs, e0, i, ctx, cross_kv[i] if cross_kv is not None else ctx_text)
        out = self.head(xs, e)  # [B, F', T, out*pt*ph*pw]
        out = out.view(b, fp, hp, wp, pt, ph, pw, cfg.out_dim)
        out = out.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, cfg.out_dim, f, h, w)
        return out.float()
