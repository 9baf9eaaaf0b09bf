"""The causal Wan DiT and what it computes with: config, transformer, RoPE, masks, KV cache, fp8 formats.

Imports nothing from the other causal sub-packages (weights -> memory -> sampling -> model)."""
