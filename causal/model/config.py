"""Configuration of one Wan DiT expert (the shapes that decide every weight)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

ROPE_TABLE = 1024  # positions in the RoPE table of every released Wan model


@dataclass(frozen=True)
class WanConfig:
    """Shape of a Wan transformer. Defaults are the CausalWan2.2-I2V-A14B expert."""

    dim: int = 5120
    ffn_dim: int = 13824
    num_heads: int = 40
    num_layers: int = 40
    in_dim: int = 16  # 16: T2V-initialised (CausalWan2.2); 36: [noisy 16 | mask 4 | image latent 16]
    out_dim: int = 16
    text_dim: int = 4096
    text_len: int = 512
    freq_dim: int = 256
    eps: float = 1e-6
    patch_size: tuple = (1, 2, 2)
    image_branch: bool = False  # Wan2.1 I2V CLIP branch (img_emb, k_img/v_img/norm_k_img)
    clip_dim: int = 1280
    cross_attn_norm: bool = True
    rope_table: int = ROPE_TABLE

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head dim {self.head_dim} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "WanConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def describe(self) -> str:
        return (f"dim {self.dim}, {self.num_layers} layers, {self.num_heads} heads, ffn {self.ffn_dim}, "
                f"in_dim {self.in_dim}{', image branch' if self.image_branch else ''}")


# Presets of released models; tests use TINY.
A14B = WanConfig()
WAN_1_3B = WanConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)
TINY = WanConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_dim=32, text_len=16, freq_dim=32)
