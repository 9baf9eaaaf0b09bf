"""The README's main job: the command-line run without weights (the bundled tiny world) writes a playable MP4."""
import av
import pytest
import torch

from causalwan import cli


def test_demo_run_writes_playable_mp4(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    summary = cli.main(["--chunks", "2", "--width", "120", "--height", "64", "--out", str(out)])
    text = capsys.readouterr().out
    assert "No model files given: using the bundled tiny world" in text
    assert "note: --width 120 snapped to 128 (a multiple of 16)" in text
    assert "chunk 1 (2 of 2), prompt 1" in text
    assert summary["frames"] == 1 + 12 * 2 and summary["demo"] is True
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        frames = [f for f in c.decode(s)]
    assert len(frames) == 25 and (s.width, s.height) == (128, 64)


def test_demo_run_with_a_prompt_switch(tmp_path, capsys):
    out = tmp_path / "switch.mp4"
    summary = cli.main(["--chunks", "3", "--width", "64", "--height", "64", "--switch", "2", "now it rains",
                        "--out", str(out)])
    assert summary["frames"] == 1 + 12 * 3
    before = out.read_bytes()
    with pytest.raises(SystemExit) as exc:
        cli.main(["--chunks", "2", "--switch", "5", "later", "--out", str(out)])
    assert exc.value.code == 2
    assert "error: --switch 5 never comes: --chunks 2 makes chunks 0 to 1" in capsys.readouterr().err
    assert out.read_bytes() == before  # a failed run leaves the earlier video alone


def test_a_failure_mid_video_keeps_the_existing_file(tmp_path):
    from causalwan.video_writer import Mp4Writer

    out = tmp_path / "v.mp4"
    out.write_bytes(b"an earlier video")
    with pytest.raises(RuntimeError):
        with Mp4Writer(out) as w:
            w.write(torch.zeros(2, 16, 16, 3))
            raise RuntimeError("cancelled")
    assert out.read_bytes() == b"an earlier video" and not (tmp_path / "v.partial.mp4").exists()
    with Mp4Writer(out) as w:
        w.write(torch.zeros(2, 16, 16, 3))
    assert out.read_bytes()[4:8] == b"ftyp" and w.frames == 2


def test_incomplete_real_model_arguments_are_explained(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--high", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "x.mp4")])
    assert exc.value.code == 2
    assert "error: only --high (the high-noise expert) was given" in capsys.readouterr().err


def test_text_encoder_is_dropped_before_streaming_and_memory_options_apply(tmp_path, monkeypatch):
    import weakref

    from causalwan.causal.sampling.stream import Stream

    encoders, seen = [], {}
    real_encode, real_prime = cli.encode_prompts, Stream.prime

    def encode_prompts(encoder, *args):
        encoders.append(weakref.ref(encoder))
        return real_encode(encoder, *args)

    def prime(self, latent, start_frame=None):
        seen["encoder alive"] = encoders[0]() is not None
        seen["cache"], seen["offload"] = self.options.cache_dtype, self.experts._offload.mode
        return real_prime(self, latent, start_frame)

    monkeypatch.setattr(cli, "encode_prompts", encode_prompts)
    monkeypatch.setattr(Stream, "prime", prime)
    summary = cli.main(["--chunks", "1", "--width", "64", "--height", "64", "--kv-cache", "fp8_e4m3fn",
                        "--offload", "swap", "--out", str(tmp_path / "v.mp4")])
    assert summary["frames"] == 13
    assert seen == {"encoder alive": False, "cache": torch.float8_e4m3fn, "offload": "swap"}


def test_out_of_memory_is_explained_with_the_planners_advice(tmp_path, capsys, monkeypatch):
    from causalwan.causal.sampling.stream import Stream

    def oom(self, frames=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(Stream, "next_chunk", oom)
    with pytest.raises(SystemExit) as exc:
        cli.main(["--chunks", "1", "--width", "64", "--height", "64", "--out", str(tmp_path / "v.mp4")])
    err = capsys.readouterr().err
    assert exc.value.code == 1
    assert "error: CausalWan ran out of memory in offload mode 'resident' at 64x64" in err
    assert "Try offload mode 'swap'" in err and "Original error: CUDA out of memory" in err
    assert "after 0 of 1 chunks" in err and not (tmp_path / "v.mp4").exists()


def test_out_of_memory_advice_follows_the_mode_auto_chose_and_other_backends_errors(tmp_path, capsys, monkeypatch):
    # "auto" is planned as resident before loading; the advice must come from the mode it resolved to after
    # loading (here blocks: 1 byte free), from the loaded weights; a RuntimeError saying "out of memory" (ROCm,
    # MPS) gets the same advice as torch's OutOfMemoryError
    from causalwan.causal.sampling.stream import Stream

    real = cli.apply_offload
    monkeypatch.setattr(cli, "apply_offload", lambda *a, **k: real(*a, free_bytes=1, **k))
    monkeypatch.setattr(Stream, "next_chunk", lambda self, frames=None: (_ for _ in ()).throw(
        RuntimeError("HIP out of memory. Tried to allocate 20.00 GiB")))
    with pytest.raises(SystemExit) as exc:
        cli.main(["--chunks", "1", "--width", "64", "--height", "64", "--offload", "auto",
                  "--out", str(tmp_path / "v.mp4")])
    err = capsys.readouterr().err
    assert exc.value.code == 1
    assert "error: CausalWan ran out of memory in offload mode 'blocks', blocks 1 at 64x64" in err
    assert "Original error: HIP out of memory" in err and "after 0 of 1 chunks" in err
