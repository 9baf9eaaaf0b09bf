"""Spatially tiled decoding: layout, blending, closeness to untiled, and streaming with one cache per tile."""

import pytest
import torch

from causalwan.vae import StreamingDecoder, random_vae
from causalwan.vae.tiling import axis_spans, plan_tiles
from causalwan.vae.streaming import decode_whole

# Stated tolerance of tiled vs untiled decode (tiny random VAE, output in [-1, 1], latent 8x12, tile 8,
# overlap 4). Tiles see a cropped context (the decoder's receptive field is about +-15 latent pixels and the
# mid-block attention is global), so tiling is approximate; random weights have no smoothness, so this is a
# worst case: measured mean abs difference 0.042-0.046, max 0.60-0.68. Smaller tiles are worse (0.16-0.18).
TILED_MEAN_TOL = 0.06
TILED_MAX_TOL = 0.8


@pytest.fixture(scope="module")
def vae():
    return random_vae(base_dim=8, seed=3)


def _latent(frames, h, w, seed=0):
    return torch.randn(1, 16, frames, h, w, generator=torch.Generator().manual_seed(seed))


def test_axis_spans_cover_with_overlap():
    assert axis_spans(4, 8, 2) == [(0, 4)]
    assert axis_spans(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert axis_spans(7, 4, 2) == [(0, 4), (2, 6), (3, 7)]


def test_blend_weights_are_a_partition_of_unity_where_overlaps_are_regular():
    tiles = plan_tiles(10, 7, 4, 1, scale=8)
    total = torch.zeros(80, 56)
    for t in tiles:
        total[t.y0 * 8:t.y1 * 8, t.x0 * 8:t.x1 * 8] += t.weight[0, 0, 0]
    assert total.min() > 0
    assert torch.allclose(total[:, :24], torch.ones(80, 24), atol=1e-6)  # columns 0..3 of latent: regular


def test_bad_tile_arguments_raise(vae):
    with pytest.raises(ValueError, match="tile_overlap < tile_size"):
        StreamingDecoder(vae, tile_size=4, tile_overlap=4)


def test_tile_covering_everything_equals_untiled(vae):
    z = _latent(3, 4, 4)
    assert torch.equal(decode_whole(vae, z, tile_size=4), decode_whole(vae, z))


def test_tiled_is_close_to_untiled(vae):
    z = _latent(2, 8, 12, seed=1)
    ref = decode_whole(vae, z)
    tiled = decode_whole(vae, z, tile_size=8, tile_overlap=4)
    assert tiled.shape == ref.shape == (1, 3, 5, 64, 96)
    diff = (tiled - ref).abs()
    assert diff.mean().item() < TILED_MEAN_TOL and diff.max().item() < TILED_MAX_TOL
    small = (decode_whole(vae, z, tile_size=4, tile_overlap=2) - ref).abs()
    assert diff.mean() < small.mean()              # more context per tile -> closer to untiled


def test_tiled_streaming_equals_tiled_whole(vae):
    z = _latent(7, 6, 6, seed=2)
    whole = decode_whole(vae, z, tile_size=4, tile_overlap=2)
    dec = StreamingDecoder(vae, tile_size=4, tile_overlap=2)
    outs = [dec.decode_video(p) for p in z.split([1, 3, 3], dim=2)]
    assert [o.shape[2] for o in outs] == [1, 12, 12]
    assert len(dec._caches) == 4 and all(len(c) > 0 for c in dec._caches)
    assert (torch.cat(outs, dim=2) - whole).abs().max().item() <= 1e-5
