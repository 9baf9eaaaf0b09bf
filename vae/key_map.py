"""Wan2.1 VAE parameter names: original Wan (also ComfyUI files) <-> diffusers AutoencoderKLWan.

Original names are the internal naming of this package. Mapping (facts sheet, section 3):
    encoder.conv1 / decoder.conv1          -> encoder.conv_in / decoder.conv_in
    conv1 / conv2 (top level)              -> quant_conv / post_quant_conv
    encoder.downsamples.i                  -> encoder.down_blocks.i
    decoder.upsamples.j                    -> decoder.up_blocks.(j // g).resnets.(j % g) or .upsamplers.0
                                              (g = num_res_blocks + 2; the last of each group is the upsampler)
    middle.0 / middle.1 / middle.2         -> mid_block.resnets.0 / mid_block.attentions.0 / mid_block.resnets.1
    head.0 / head.2                        -> norm_out / conv_out
    residual.0.gamma / .2 / .3.gamma / .6  -> norm1.gamma / conv1 / norm2.gamma / conv2; shortcut -> conv_shortcut
"""

import re

_RESIDUAL = (
    ("residual.0.", "norm1."), ("residual.2.", "conv1."), ("residual.3.", "norm2."),
    ("residual.6.", "conv2."), ("shortcut.", "conv_shortcut."),
)
_MIDDLE = {"0": "mid_block.resnets.0.", "1": "mid_block.attentions.0.", "2": "mid_block.resnets.1."}


def _block_rest(rest: str) -> str:
    for old, new in _RESIDUAL:
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def original_to_diffusers(key: str, num_res_blocks: int = 2) -> str:
    """Rename one original Wan VAE key to its diffusers AutoencoderKLWan name."""
    top = {"conv1.": "quant_conv.", "conv2.": "post_quant_conv."}
    for old, new in top.items():
        if key.startswith(old):
            return new + key[len(old):]
    side, rest = key.split(".", 1)
    if rest.startswith("conv1."):
        return f"{side}.conv_in.{rest[len('conv1.'):]}"
    m = re.match(r"head\.([02])\.(.*)", rest)
    if m:
        return f"{side}.{'norm_out' if m[1] == '0' else 'conv_out'}.{m[2]}"
    m = re.match(r"middle\.(\d)\.(.*)", rest)
    if m:
        return f"{side}.{_MIDDLE[m[1]]}{_block_rest(m[2])}"
    m = re.match(r"downsamples\.(\d+)\.(.*)", rest)
    if m:
        return f"{side}.down_blocks.{m[1]}.{_block_rest(m[2])}"
    m = re.match(r"upsamples\.(\d+)\.(.*)", rest)
    if m:
        group, pos = divmod(int(m[1]), num_res_blocks + 2)
        inner = f"resnets.{pos}" if pos <= num_res_blocks else "upsamplers.0"
        return f"{side}.up_blocks.{group}.{inner}.{_block_rest(m[2])}"
    return key


def diffusers_name_table(original_keys, num_res_blocks: int = 2) -> dict:
    """{diffusers name: original name} for the given original keys (the inverse of original_to_diffusers)."""
    return {original_to_diffusers(k, num_res_blocks): k for k in original_keys}


def looks_like_diffusers(keys) -> bool:
    """True if a state dict's keys use diffusers AutoencoderKLWan names."""
    return any(k.startswith(("quant_conv.", "post_quant_conv.", "encoder.conv_in.", "decoder.conv_in.")) for k in keys)
