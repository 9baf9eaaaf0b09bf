"""The README's main job: the command-line run without weights writes a playable MP4 and says it is noise."""
import av
import pytest
import torch

from causalwan import cli


def test_demo_run_writes_playable_mp4(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    summary = cli.main(["--chunks", "2", "--width", "120", "--height", "64", "--out", str(out)])
    text = capsys.readouterr().out
    assert "RANDOM weights" in text and "noise" in text
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
