"""The workflows the pack ships: one folder, `example_workflows/` (the name ComfyUI's docs give and its server
prefers), a .jpg thumbnail of the same name beside each .json. The template browser titles each card with the
file name and cuts it after about 30 characters (frontend 1.58), so the words that tell them apart come first."""
from pathlib import Path

FOLDER = Path(__file__).resolve().parent.parent / "example_workflows"

I2V_FILES = "Wan2.2 I2V A14B, single files.json"
I2V_FOLDER = "Wan2.2 I2V A14B, diffusers folder.json"
PROMPT_SWITCH = "Wan2.2 I2V A14B, prompt switch.json"
T2V_DENSE = "Wan T2V 1.3B, Self Forcing dense.json"
TINY_WORLD = "Tiny world, ready to run.json"  # the bundled model (assets/tinyworld), its own text encoder


def all_workflows() -> list[Path]:
    return sorted(FOLDER.glob("*.json"))
