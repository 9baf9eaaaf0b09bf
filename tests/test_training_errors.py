"""Bad training input: one clear error each, nothing written."""
import json

import pytest
import torch

from causalwan.causal.sampling.experts import ExpertPair
from causalwan.causal.training.conditioning import PromptSet, read_prompts
from causalwan.causal.training.config import ConfigError, TrainConfig, load_config
from causalwan.causal.training.trainer import DMDTrainer
from causalwan import train as train_cli
from tiny_models import tiny_model

PROMPTS = PromptSet([torch.randn(5, 32)], torch.zeros(2, 32))


def cfg(tmp_path, **kw):
    return TrainConfig(steps=2, latent_frames=4, latent_height=4, latent_width=4, output=str(tmp_path / "out"), **kw)


def test_teacher_and_student_of_different_shapes(tmp_path):
    teacher = ExpertPair(low=tiny_model(3, text_dim=16))
    with pytest.raises(ValueError, match="teacher and student do not fit together: text_dim 16 vs 32"):
        DMDTrainer(cfg(tmp_path), ExpertPair(low=tiny_model(1)), teacher, PROMPTS)
    teacher = ExpertPair(low=tiny_model(3, in_dim=12, out_dim=12))
    with pytest.raises(ValueError, match="out_dim 12 vs 16"):
        DMDTrainer(cfg(tmp_path), ExpertPair(low=tiny_model(1)), teacher, PROMPTS)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content,message", [(b"", "has no prompts"), (b"\n  \n", "has no prompts"),
                                             (b"\x89PNG\r\n\x1a\n\x00\x00", "is not text"),
                                             (b"caf\xe9 au lait", "is not UTF-8")])
def test_prompts_file_empty_or_not_text(tmp_path, content, message):
    p = tmp_path / "prompts.txt"
    p.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_prompts(p)
    assert read_prompts(_write(tmp_path / "ok.txt", "a fox\n\n  a cat runs \n")) == ["a fox", "a cat runs"]


def _write(p, text):
    p.write_text(text)
    return p


def test_existing_save_name_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "out").write_text("precious")
    with pytest.raises(FileExistsError, match="already exists; choose another save name"):
        DMDTrainer(cfg(tmp_path), ExpertPair(low=tiny_model(1)), ExpertPair(low=tiny_model(3)), PROMPTS)
    assert (tmp_path / "out").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no checkpoint folder either


def test_unknown_config_key_names_it_and_the_valid_ones(tmp_path):
    f = _write(tmp_path / "train.json", json.dumps({"steps": 3, "learning_rate": 1e-5}))
    with pytest.raises(ConfigError, match=r"unknown setting 'learning_rate'; valid settings are: teacher, student"):
        load_config(f)
    with pytest.raises(ConfigError, match="unknown setting 'stepz'"):
        TrainConfig.from_dict({"stepz": 1})
    assert load_config(_write(tmp_path / "ok.json", json.dumps({"steps": 3})), {"seed": 4}).seed == 4


def test_command_line_reports_config_errors_without_writing(tmp_path, capsys):
    f = _write(tmp_path / "train.json", json.dumps({"stepz": 3}))
    assert train_cli.main(["--config", str(f)]) == 2
    assert "unknown setting 'stepz'" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    f = _write(tmp_path / "t2.json", json.dumps({"teacher": "x", "output": str(tmp_path / "taken")}))
    assert train_cli.main(["--config", str(f)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t2.json", "taken", "train.json"]
