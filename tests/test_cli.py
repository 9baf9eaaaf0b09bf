"""The README's main job: the command-line run without weights writes a playable MP4 and says it is noise."""
import av
import pytest

from causalwan import cli


def test_demo_run_writes_playable_mp4(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    summary = cli.main(["--chunks", "2", "--width", "120", "--height", "64", "--out", str(out)])
    text = capsys.readouterr().out
    assert "RANDOM weights" in text and "noise" in text
    assert "note: 120x64 snapped to 128x64" in text
    assert "chunk 2/2" in text
    assert summary["frames"] == 1 + 12 * 2 and summary["demo"] is True
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        frames = [f for f in c.decode(s)]
    assert len(frames) == 25 and (s.width, s.height) == (128, 64)


def test_incomplete_real_model_arguments_are_explained(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--high", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "x.mp4")])
    assert exc.value.code == 2
    assert "error: only a high-noise expert was given" in capsys.readouterr().err
