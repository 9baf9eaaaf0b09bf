"""Loading VAE weights: original .pth, ComfyUI .safetensors and a diffusers folder give the same model;
bad files fail with messages that name the file, what was expected and the first offending keys."""

import pytest
import torch
from safetensors.torch import save_file

from causalwan.vae import VAEWeightsError, load_vae, load_vae_state_dict, random_vae
from causalwan.vae.key_map import original_to_diffusers
from causalwan.vae.streaming import decode_whole

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vae_weights")
    vae = random_vae(base_dim=8, seed=4)
    sd = vae.state_dict()
    torch.save(dict(sd), root / "Wan2.1_VAE.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(root / "wan_2.1_vae.safetensors"))
    ref = diffusers.AutoencoderKLWan(
        base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True]
    )
    ref.load_state_dict({original_to_diffusers(k): v for k, v in sd.items()}, strict=True)
    ref.save_pretrained(root / "pipeline" / "vae")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(root / "diffusers_named.safetensors"))
    return vae, root


def test_every_format_gives_the_same_model(files):
    vae, root = files
    z = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    image = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    expected_video, expected_latent = decode_whole(vae, z), vae.encode_images(image)
    for path in ("Wan2.1_VAE.pth", "wan_2.1_vae.safetensors", "pipeline/vae", "pipeline", "diffusers_named.safetensors"):
        loaded = load_vae(root / path)
        assert loaded.cfg.base_dim == 8 and loaded.cfg.num_res_blocks == 2, path
        assert torch.equal(decode_whole(loaded, z), expected_video), path
        assert torch.equal(loaded.encode_images(image), expected_latent), path


def test_dtype_and_prefixed_keys(files, tmp_path):
    vae, root = files
    prefixed = {"first_stage_model." + k: v.half() for k, v in vae.state_dict().items()}
    save_file(prefixed, str(tmp_path / "prefixed.safetensors"))
    loaded = load_vae(tmp_path / "prefixed.safetensors", dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16 and not any(p.requires_grad for p in loaded.parameters())
    assert set(load_vae_state_dict(tmp_path / "prefixed.safetensors")) == set(vae.state_dict())


@pytest.mark.parametrize("name", ["wan_2.1_vae.safetensors", "Wan2.1_VAE.pth"])
def test_truncated_file(files, tmp_path, name):
    _, root = files
    data = (root / name).read_bytes()
    bad = tmp_path / name
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(VAEWeightsError, match=rf"could not read VAE weights '.*{name}'.*truncated"):
        load_vae(bad)


def test_missing_and_unexpected_keys(files, tmp_path):
    vae, _ = files
    sd = dict(vae.state_dict())
    del sd["decoder.head.2.weight"]
    sd["decoder.extra.weight"] = torch.zeros(1)
    save_file(sd, str(tmp_path / "bad_keys.safetensors"))
    with pytest.raises(VAEWeightsError) as err:
        load_vae(tmp_path / "bad_keys.safetensors")
    msg = str(err.value)
    assert "bad_keys.safetensors" in msg and "Wan2.1 VAE with base_dim=8, z_dim=16" in msg
    assert "1 missing keys (first: decoder.head.2.weight)" in msg
    assert "1 unexpected keys (first: decoder.extra.weight)" in msg


def test_wrong_shape(files, tmp_path):
    vae, _ = files
    sd = dict(vae.state_dict())
    sd["decoder.conv1.weight"] = torch.zeros(32, 16, 3, 3, 1)
    torch.save(sd, tmp_path / "bad_shape.pth")
    with pytest.raises(VAEWeightsError, match=r"1 wrong shapes \(first: decoder\.conv1\.weight \(32, 16, 3, 3, 1\) "
                                              r"\(expected \(32, 16, 3, 3, 3\)\)\)"):
        load_vae(tmp_path / "bad_shape.pth")


def test_not_a_vae_and_empty_folder(tmp_path):
    save_file({"blocks.0.self_attn.q.weight": torch.zeros(2, 2)}, str(tmp_path / "dit.safetensors"))
    with pytest.raises(VAEWeightsError, match=r"does not look like a Wan2\.1 VAE.*encoder\.conv1\.weight.*"
                                              r"first keys in the file: blocks\.0\.self_attn\.q\.weight"):
        load_vae(tmp_path / "dit.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VAEWeightsError, match="no VAE weights in folder .*diffusion_pytorch_model.safetensors"):
        load_vae(tmp_path / "empty")
    with pytest.raises(VAEWeightsError, match="neither a file nor a folder"):
        load_vae(tmp_path / "nope.safetensors")


def test_wan22_vae_is_refused(tmp_path):
    save_file({"encoder.conv1.weight": torch.zeros(4, 3, 3, 3, 3), "conv2.weight": torch.zeros(48, 48, 1, 1, 1)},
              str(tmp_path / "wan2.2_vae.safetensors"))
    with pytest.raises(VAEWeightsError, match="z_dim 48.*only the Wan2.1 VAE"):
        load_vae(tmp_path / "wan2.2_vae.safetensors")
