"""The command line with model files (tiny ones, written in the real formats): the memory plan is printed before
anything is loaded, large files report their loading progress, and each chunk's line names the prompt in force,
counting chunks from 0 as --switch does."""
import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

from transformers import UMT5Config, UMT5EncoderModel  # noqa: E402

from causalwan import cli  # noqa: E402
from causalwan.causal.weights import assemble  # noqa: E402
from causalwan.vae.random_init import random_vae  # noqa: E402
from weight_writers import ref_model, tiny_spiece, write_comfy  # noqa: E402

WORDS = "a fox runs through fresh snow and then it starts to rain on the lake".split()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_files")
    model = root / "dense.safetensors"
    write_comfy(ref_model(seed=0, text_dim=16), model, dtype=torch.float32)
    vae = root / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in random_vae(base_dim=8, seed=0).state_dict().items()}, str(vae))
    torch.manual_seed(0)
    cfg = UMT5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                     feed_forward_proj="gated-gelu", dropout_rate=0.0)
    sd = {k: v.contiguous() for k, v in UMT5EncoderModel(cfg).eval().state_dict().items()
          if k != "encoder.embed_tokens.weight"}
    sd["spiece_model"] = torch.frombuffer(bytearray(tiny_spiece(WORDS, 64)), dtype=torch.uint8)
    text = root / "umt5.safetensors"
    save_file(sd, str(text))
    return {"--model": model, "--vae": vae, "--text-encoder": text}


def test_plan_before_loading_progress_while_loading_prompt_per_chunk(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(assemble, "LARGE_FILE_BYTES", 1)  # every file counts as large here
    out = tmp_path / "fox.mp4"
    args = [x for k, v in files.items() for x in (k, str(v))]
    summary = cli.main([*args, "--width", "32", "--height", "32", "--chunks", "3", "--frames-per-chunk", "1",
                        "--steps", "1000,500", "--prompt", "a fox runs through fresh snow",
                        "--switch", "2", "it starts to rain", "--switch-mode", "cut", "--out", str(out)])
    text = capsys.readouterr().out
    lines = text.splitlines()
    plan = next(i for i, line in enumerate(lines) if line.startswith("memory plan: "))
    loading = [i for i, line in enumerate(lines) if line.startswith(f"loading '{files['--model']}': ")]
    assert loading and plan < loading[0]  # the plan comes before the first tensor is read
    assert "at 32x32, 4 frames: peak" in lines[plan]
    assert lines[loading[-1]].startswith(f"loading '{files['--model']}': 100% of ")
    for what in ("the VAE", "the model", "the text encoder"):  # every file: its size before, its time after
        before = next(i for i, line in enumerate(lines) if line.startswith(f"loading {what} ("))
        after = next(i for i, line in enumerate(lines) if line.startswith(f"loaded {what} in "))
        assert plan < before < after and "GiB on disk) ..." in lines[before]
    percents = [int(lines[i].split(": ")[1].split("%")[0]) for i in loading]
    assert percents == sorted(percents) and len(set(percents)) == len(percents)
    chunk_lines = [line for line in lines if line.startswith("chunk ")]
    assert chunk_lines[0].startswith("chunk 0 (1 of 3), prompt 1 'a fox runs through fresh snow': ")
    assert chunk_lines[1].startswith("chunk 1 (2 of 3), prompt 1 ")
    assert chunk_lines[2] == "chunk 2: switching to prompt 2 'it starts to rain' (cut)"
    assert chunk_lines[3].startswith("chunk 2 (3 of 3), prompt 2 'it starts to rain': ")
    assert summary["frames"] == 1 + 4 * 3 and out.read_bytes()[4:8] == b"ftyp"


def test_a_file_that_is_no_wan_model_is_refused_before_anything_loads(files, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--model", str(files["--vae"]), "--vae", str(files["--vae"]), "--text-encoder",
                  str(files["--text-encoder"]), "--out", str(tmp_path / "v.mp4")])
    captured = capsys.readouterr()
    assert e.value.code == 2 and captured.out == "" and list(tmp_path.iterdir()) == []
    assert captured.err.startswith(f"error: --model: '{files['--vae']}' is not a Wan video transformer: it looks "
                                   f"like a VAE")
    assert len(captured.err.strip().splitlines()) == 1


def test_a_text_encoder_of_the_wrong_width_is_refused_before_anything_loads(files, tmp_path, capsys):
    cfg = UMT5Config(vocab_size=64, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2,
                     feed_forward_proj="gated-gelu", dropout_rate=0.0)
    sd = {k: v.contiguous() for k, v in UMT5EncoderModel(cfg).state_dict().items() if "embed_tokens" not in k}
    sd["spiece_model"] = torch.frombuffer(bytearray(tiny_spiece(WORDS, 64)), dtype=torch.uint8)
    narrow = tmp_path / "narrow_umt5.safetensors"
    save_file(sd, str(narrow))
    with pytest.raises(SystemExit) as e:
        cli.main(["--model", str(files["--model"]), "--vae", str(files["--vae"]), "--text-encoder", str(narrow),
                  "--out", str(tmp_path / "v.mp4")])
    captured = capsys.readouterr()
    assert e.value.code == 2 and captured.out == "" and sorted(tmp_path.iterdir()) == [narrow]
    assert captured.err.strip() == (f"error: --text-encoder: the text encoder '{narrow}' gives 8-wide text, but the "
                                    f"model reads 16-wide text; give the text encoder made for this model "
                                    f"(umT5-XXL for Wan)")


def test_each_header_is_read_once_and_the_tokenizer_built_once(files, tmp_path, monkeypatch, capsys):
    """The checks read the experts' and text encoder's headers (and build the tokenizer) to refuse bad files
    before anything loads; the loaders take what the checks read instead of reading it again."""
    from collections import Counter

    from causalwan.causal.weights import checkpoint_files
    from causalwan.causal.weights.umt5_tokenizer import UMT5Tokenizer

    parses, builds = Counter(), Counter()
    parse = checkpoint_files.open_safetensors
    monkeypatch.setattr(checkpoint_files, "open_safetensors", lambda path: parses.update([str(path)]) or parse(path))
    build = UMT5Tokenizer.from_sentencepiece.__func__
    monkeypatch.setattr(UMT5Tokenizer, "from_sentencepiece",
                        classmethod(lambda cls, *a, **k: builds.update(["tokenizer"]) or build(cls, *a, **k)))
    args = [x for k, v in files.items() for x in (k, str(v))]
    summary = cli.main([*args, "--width", "32", "--height", "32", "--chunks", "1", "--frames-per-chunk", "1",
                        "--steps", "1000", "--out", str(tmp_path / "once.mp4")])
    assert summary["frames"] == 5
    assert parses == {str(files["--model"]): 1, str(files["--text-encoder"]): 1}
    assert builds == {"tokenizer": 1}


def test_the_files_metadata_sets_the_chunking_as_the_loader_reads_it(files, tmp_path, capsys):
    """A file whose name says no release but whose metadata gives the release's values (1 frame per chunk, a
    window of 6 with 1 sink): the command line runs with those values, as the loader recognises them."""
    from safetensors.torch import load_file

    plain = tmp_path / "plain.safetensors"
    save_file(load_file(str(files["--model"])), str(plain),
              metadata={"num_frame_per_block": "1", "local_attn_size": "6", "sink_size": "1"})
    summary = cli.main(["--model", str(plain), "--vae", str(files["--vae"]), "--text-encoder",
                        str(files["--text-encoder"]), "--width", "32", "--height", "32", "--chunks", "2",
                        "--steps", "1000", "--out", str(tmp_path / "meta.mp4")])
    lines = capsys.readouterr().out.splitlines()
    model = next(line for line in lines if line.startswith("model: "))
    assert "(values from the file's metadata)" in model and "frame-wise, window 6 + 1 sink frames" in model
    plan = next(line for line in lines if line.startswith("memory plan: "))
    assert "at 32x32, window 6: peak" in plan  # planned with the window the stream runs with
    assert summary["frames"] == 1 + 4 * 2 and len(summary["per_chunk"]) == 2
