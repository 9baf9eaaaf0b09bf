"""Every bad command-line input is answered in one line, through a real subprocess: exit code 2, `error: ...` in
the CLI's words (its flags), no traceback, no file left behind, and an existing output byte-identical. Errors that
only happen later (full disk, out of memory, Ctrl-C, SIGTERM) also end in one line and keep the old video."""
import errno
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch

from causalwan import cli

OLD = b"an earlier video, kept byte for byte"
SMALL = ["--chunks", "2", "--width", "64", "--height", "64"]


def run_cli(args, cwd, preexec_fn=None, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "causalwan.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, preexec_fn=preexec_fn, timeout=timeout)


@pytest.fixture
def place(tmp_path):
    """A folder with an earlier video at out.mp4 and a few files the bad inputs point at."""
    (tmp_path / "out.mp4").write_bytes(OLD)
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "pics").mkdir()
    png = cli.BUNDLED_IMAGE.read_bytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "page.pt").write_bytes(b"<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>\n" * 8)
    (tmp_path / "expert.safetensors").write_bytes(b"\x10" + b"\x00" * 63)
    (tmp_path / "afile").write_text("a file where a folder should be")
    return tmp_path


def listing(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


ISSUE_CASES = [  # the cases the issue lists, run as a user runs them: (arguments, words the one line must hold)
    (["--width", "0"], "--width 0 cannot be used: it must be between 16 and 8192"),
    (["--fps", "0"], "--fps 0 is out of range: it must be between 1 and 240"),
    (["--fps", "-5"], "--fps -5 is out of range"),
    (["--shift", "nan"], "--shift is nan, which is not a usable number"),
    (["--shift", "inf"], "--shift is inf, which is not a usable number"),
    (["--steps", ""], "--steps is empty; give timesteps such as --steps 1000,750,500,250, or leave --steps out"),
    (["--chunks", "0"], "--chunks 0 is out of range: it must be at least 1"),
    (["--sink", "-1"], "--sink -1 cannot be used: sink frames are 0 or more"),
    (["--window", "4", "--sink", "4"], "--sink 4 must be smaller than --window 4"),
    (["--seed", str(2 ** 70)], f"--seed {2 ** 70} is out of range: it must be between 0 and 18446744073709551615"),
    (["--image", "notes.txt"], "--image 'notes.txt' is not an image"),
    (["--image", "pics"], "--image 'pics' is a folder"),
    (["--image", "cut.png"], "--image 'cut.png' could not be read"),
    (["--out", "pics"], "--out 'pics' is a folder; give a file name in it, e.g. --out pics/video.mp4"),
    (["--out", "afile/v.mp4"], "--out 'afile/v.mp4': 'afile' is a file, not a folder"),
    (["--model", "page.pt"], "--model 'page.pt' is a web page or an error message, not weights"),
    (["--model", "expert.safetensors"], "--vae is needed with these model files"),
    (["--high", "expert.safetensors", "--low", "expert.safetensors"], "--high and --low are the same file"),
    (["--high", "expert.safetensors"], "only --high (the high-noise expert) was given; add --low"),
]
MORE_CASES = [  # the same checks on the other flags, run in-process (a subprocess costs ~5 s of torch import)
    (["--height", "0"], "--height 0 cannot be used"),
    (["--shift", "-2"], "--shift -2 cannot be used: the shift must be positive"),
    (["--boundary", "1000"], "--boundary 1000 cannot be used"),
    (["--boundary", "nan"], "--boundary is nan"),
    (["--steps", "1000;500"], "could not read the step list '1000;500' (--steps); write timesteps separated by commas"),
    (["--steps", "500,750"], "--steps '500,750': steps must be strictly decreasing"),
    (["--chunks", "many"], "argument --chunks: invalid int value: 'many'; run with --help"),
    (["--frames-per-chunk", "0"], "--frames-per-chunk 0 is out of range"),
    (["--sink", "3"], "--sink 3 needs an attention window; set --window (e.g. 12) or --sink 0"),
    (["--window", "-4"], "--window -4 is out of range"),
    (["--window", "2"], "--window 2 with --sink 0 cannot hold a chunk of 3 frames (--frames-per-chunk)"),
    (["--chunks", "400"], "--chunks 400 makes 1201 latent frames, more than the model's 1024"),
    (["--seed", "-1"], "--seed -1 is out of range"),
    (["--switch", "5", "later"], "--switch 5 never comes: --chunks 2 makes chunks 0 to 1; raise --chunks to 6"),
    (["--switch", "0", "first"], "--switch 0: chunk 0 is where --prompt starts"),
    (["--switch", "soon", "rain"], "--switch takes a chunk number and then a prompt"),
    (["--switch", "1", "a", "--switch", "1", "b"], "two --switch at chunk 1"),
    (["--prompt", " "], "--prompt is empty"),
    (["--image", "missing.png"], "--image 'missing.png' does not exist"),
    (["--out", "video.avi"], "--out 'video.avi': the video is written as MP4; give a name ending in .mp4"),
    (["--device", "toaster"], "--device 'toaster' is not a device; use cpu, cuda or cuda:N"),
    (["--model", "missing.pt"], "--model 'missing.pt' does not exist"),
    (["--model", "expert.safetensors", "--vae", "expert.safetensors"], "--text-encoder is needed"),
    (["--folder", "pics", "--model", "expert.safetensors"], "--folder and --model were both given"),
    (["--model", "expert.safetensors", "--vae", "expert.safetensors", "--text-encoder", "expert.safetensors"],
     "--model: could not read 'expert.safetensors' as safetensors"),
    (["--vae", "expert.safetensors"], "--vae was given without a model"),
    (["--lora", "missing.safetensors:0.5"], "--lora 'missing.safetensors' does not exist"),
]
if not torch.cuda.is_available():
    ISSUE_CASES.append((["--device", "cuda"], "--device cuda: this PyTorch is a CPU-only build; use --device cpu"
                        if torch.version.cuda is None else "--device cuda: no CUDA GPU is visible"))


def assert_refused(code, out, err, place, before, words):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert words in lines[0]
    assert "Traceback" not in err + out
    assert out == ""  # refused before the memory plan, the demo notice, or any loading
    assert listing(place) == before and (place / "out.mp4").read_bytes() == OLD
    for node_word in ("low=", "window_frames", "sink_frames", "num_chunks", "high_noise_model"):
        assert node_word not in lines[0]


@pytest.mark.parametrize("args,words", ISSUE_CASES, ids=[" ".join(a)[:40] for a, _ in ISSUE_CASES])
def test_bad_input_is_one_line_and_touches_nothing(place, args, words):
    before = listing(place)
    r = run_cli(["--out", "out.mp4", *SMALL, *args], place)
    assert_refused(r.returncode, r.stdout, r.stderr, place, before, words)


@pytest.mark.parametrize("args,words", MORE_CASES, ids=[" ".join(a)[:40] for a, _ in MORE_CASES])
def test_more_bad_inputs_in_process(place, monkeypatch, capsys, args, words):
    monkeypatch.chdir(place)
    before = listing(place)
    with pytest.raises(SystemExit) as e:
        cli.main(["--out", "out.mp4", *SMALL, *args])
    captured = capsys.readouterr()
    assert_refused(e.value.code, captured.out, captured.err, place, before, words)


def test_help_lists_every_option_with_its_default():
    text = subprocess.run([sys.executable, "-m", "causalwan.cli", "--help"], capture_output=True, text=True,
                          check=True).stdout
    flags = [a for a in cli.build_parser()._actions if a.option_strings and a.dest != "help"]
    assert len(flags) >= 20
    for action in flags:
        assert action.option_strings[-1] in text
        assert action.help and "default" in action.help.lower(), action.option_strings
    assert "causalwan-run" in text


def test_the_installed_command_exits_0_after_a_video(tmp_path, capsys):
    from pathlib import Path

    pyproject = (Path(cli.__file__).parent / "pyproject.toml").read_text()
    assert 'causalwan-run = "causalwan.cli:command"' in pyproject  # console scripts exit with what it returns
    assert cli.command([*SMALL, "--chunks", "1", "--out", str(tmp_path / "v.mp4")]) == 0
    assert (tmp_path / "v.mp4").read_bytes()[4:8] == b"ftyp" and "(1 of 1)" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------- later errors
def _no_bigger_files(limit):
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_file_size


def test_full_disk_while_writing_removes_the_partial_file_and_keeps_the_old_video(place):
    before = listing(place)
    r = run_cli(["--out", "out.mp4", "--chunks", "3", "--width", "96", "--height", "96"], place,
                preexec_fn=_no_bigger_files(4000))
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert lines[0].startswith("error: no room to write the video (File too large) after ")
    assert "'out.mp4' is kept as it was (the unfinished file was removed); free disk space" in lines[0]
    assert listing(place) == before and (place / "out.mp4").read_bytes() == OLD


def test_disk_full_in_process_names_the_disk(tmp_path, monkeypatch, capsys):
    from causalwan import video_writer

    def full(self, images):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.partial))

    monkeypatch.setattr(video_writer.Mp4Writer, "write", full)
    with pytest.raises(SystemExit) as e:
        cli.main([*SMALL, "--out", str(tmp_path / "new" / "v.mp4")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1 and len(err.splitlines()) == 1
    assert "no room to write the video (No space left on device) after 0 of 2 chunks: no video was written" in err
    assert list(tmp_path.iterdir()) == []  # neither the partial file nor the folder made for it


def test_out_of_memory_mid_run_is_one_line(tmp_path, monkeypatch, capsys):
    from causalwan.vae import streaming

    calls = []

    def oom(self, latent):
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, latent)

    real = streaming.StreamingDecoder.decode
    monkeypatch.setattr(streaming.StreamingDecoder, "decode", oom)
    out = tmp_path / "v.mp4"
    out.write_bytes(OLD)
    with pytest.raises(SystemExit) as e:
        cli.main([*SMALL, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1 and len(err.splitlines()) == 1
    assert err.startswith("error: CausalWan ran out of memory in offload mode 'resident' at 64x64")  # the planner
    assert "(after 0 of 2 chunks: " in err and "kept as it was" in err and out.read_bytes() == OLD and sorted(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_run_says_what_was_kept(place, sig, code):
    before = listing(place)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "causalwan.cli", "--out", "out.mp4", "--chunks", "200",
                          "--width", "64", "--height", "64", "--window", "6", "--sink", "1"], cwd=place, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stdout:  # until the video grows beside the old one (the encoder holds back its first frames)
            if line.startswith("chunk ") and (place / "out.partial.mp4").exists():
                break
        assert (place / "out.partial.mp4").exists()
        p.send_signal(sig)
        rest, err = p.communicate(timeout=120)
    finally:
        p.kill()
    lines = err.strip().splitlines()
    assert p.returncode == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    name = signal.Signals(sig).name
    assert lines[0].startswith(f"cancelled by {name} after ") and "of 200 chunks: 'out.mp4' is kept as it was" \
        in lines[0]
    assert listing(place) == before and (place / "out.mp4").read_bytes() == OLD


def test_ctrl_c_while_the_inputs_are_checked(tmp_path, monkeypatch, capsys):
    import signal as signals

    def interrupted(a):
        signals.raise_signal(signals.SIGINT)  # as if Ctrl-C came while the model headers are read

    monkeypatch.setattr(cli, "check_args", interrupted)
    with pytest.raises(SystemExit) as e:
        cli.main([*SMALL, "--out", str(tmp_path / "v.mp4")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 130 and list(tmp_path.iterdir()) == []
    assert err == f"cancelled by SIGINT after 0 of 2 chunks: no video was written to '{tmp_path / 'v.mp4'}'"


# Runs `python -m causalwan.cli` (runpy, as -m does) with torch's import held up until the test sends SIGINT: a
# Ctrl-C that lands while torch is being imported, every time.
SLOW_TORCH = """
import runpy, sys, time
class SlowTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            print("importing torch", flush=True)
            time.sleep(120)
        return None
sys.meta_path.insert(0, SlowTorch())
runpy.run_module("causalwan.cli", run_name="__main__", alter_sys=True)
"""


def test_ctrl_c_while_torch_is_imported_is_one_line(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", SLOW_TORCH, "--out", "v.mp4"], cwd=tmp_path, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert p.stdout.readline() == "importing torch\n"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert err == "cancelled by SIGINT while starting: nothing was written\n" and out == ""
    assert list(tmp_path.iterdir()) == []
