"""Our Wan2.1 VAE against diffusers' AutoencoderKLWan on the same random weights (tiny config, CPU, fp32)."""

import pytest
import torch

from causalwan.vae import LATENT_MEAN, LATENT_STD, denormalize_latent, images_to_video, random_vae
from causalwan.vae.key_map import original_to_diffusers
from causalwan.vae.streaming import decode_whole

diffusers = pytest.importorskip("diffusers")

TOL = 1e-5


@pytest.fixture(scope="module")
def pair():
    ours = random_vae(base_dim=8, seed=1)
    ref = diffusers.AutoencoderKLWan(
        base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True]
    ).eval()
    ref.load_state_dict({original_to_diffusers(k): v for k, v in ours.state_dict().items()}, strict=True)
    return ours, ref


def test_encode_mu_matches_diffusers(pair):
    ours, ref = pair
    video = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        mu_ref = ref.encode(video).latent_dist.mode()
    mu = ours.encode(video, normalize=False)
    assert mu.shape == (1, 16, 3, 4, 4)
    assert (mu - mu_ref).abs().max().item() <= TOL
    z = ours.encode(video)
    mean = torch.tensor(LATENT_MEAN).view(1, 16, 1, 1, 1)
    std = torch.tensor(LATENT_STD).view(1, 16, 1, 1, 1)
    assert torch.allclose(z, (mu_ref - mean) / std, atol=TOL)


def test_decode_whole_clip_matches_diffusers(pair):
    ours, ref = pair
    z = torch.randn(1, 16, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        video_ref = ref.decode(denormalize_latent(z)).sample   # diffusers takes raw latents
    video = decode_whole(ours, z)                                      # we take normalised latents
    assert video.shape == (1, 3, 13, 32, 32)
    assert (video - video_ref).abs().max().item() <= TOL


def test_start_image_helper_equals_video_path(pair):
    ours, _ = pair
    image = torch.rand(1, 32, 48, 3, generator=torch.Generator().manual_seed(3))
    z = ours.encode_images(image)
    assert z.shape == (1, 16, 1, 4, 6) and z.dtype == torch.float32
    assert torch.equal(z, ours.encode(image.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1))
    assert torch.equal(images_to_video(image), image.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1)


def test_key_map_covers_every_diffusers_key(pair):
    ours, ref = pair
    assert {original_to_diffusers(k) for k in ours.state_dict()} == set(ref.state_dict())
