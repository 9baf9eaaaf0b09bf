"""comfy_adapter inside a (fake) ComfyUI: folders from folder_paths, progress to ProgressBar, events to
PromptServer, ComfyUI's interrupt, memory calls to model_management; and its fallbacks without ComfyUI."""
import sys
import types

import pytest
import torch

from causalwan.nodes import comfy_adapter as adapter
from causalwan.nodes.chunk_sampler import CausalWanChunkSampler
from causalwan.nodes.model_loader import CausalWanModelLoader
from causalwan.nodes.start_image import CausalWanImageConditioner
from causalwan.nodes.vae_loader import CausalWanVAELoader
from node_models import FOLDER, conditioning


class FakeComfy:
    """folder_paths, comfy.utils, comfy.model_management and server, recording every call."""

    def __init__(self, root):
        self.calls = []
        self.interrupt = False
        calls = self.calls

        fp = types.ModuleType("folder_paths")
        fp.get_folder_paths = lambda kind: [str(root / kind)]
        fp.get_filename_list = lambda kind: (
            ["tiny_low.safetensors", FOLDER + "transformer/diffusion_pytorch_model.safetensors"]
            if kind == "diffusion_models" else ["tiny_vae.safetensors"])
        fp.get_full_path = lambda kind, name: str(root / kind / name) if (root / kind / name).is_file() else None
        fp.get_input_directory = lambda: str(root / "input")

        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.total, self.node_id = total, node_id

            def update_absolute(self, value, total=None, preview=None):
                calls.append(("progress", value, total, self.node_id, preview and (preview[0], preview[2])))

        utils = types.ModuleType("comfy.utils")
        utils.ProgressBar = ProgressBar

        class InterruptProcessingException(Exception):
            pass

        def throw():
            if self.interrupt:
                self.interrupt = False
                raise InterruptProcessingException()

        mm = types.ModuleType("comfy.model_management")
        mm.InterruptProcessingException = InterruptProcessingException
        mm.throw_exception_if_processing_interrupted = throw
        mm.interrupt_current_processing = lambda value=True: setattr(self, "interrupt", value)
        mm.get_torch_device = lambda: torch.device("cpu")
        mm.unload_all_models = lambda: calls.append(("unload_all_models",))
        mm.free_memory = lambda n, device, keep_loaded=(): calls.append(("free_memory", n, str(device)))
        mm.soft_empty_cache = lambda force=False: calls.append(("soft_empty_cache",))

        server = types.ModuleType("server")
        server.PromptServer = types.SimpleNamespace(
            instance=types.SimpleNamespace(send_sync=lambda event, data, sid=None: calls.append((event, data))))
        self.modules = {"folder_paths": fp, "comfy.utils": utils, "comfy.model_management": mm, "server": server}

    def of(self, kind):
        return [c for c in self.calls if c[0] == kind]


@pytest.fixture
def comfy(models, monkeypatch):
    fake = FakeComfy(models)
    for name, module in fake.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    adapter.set_model_folders(None)  # use folder_paths, as inside ComfyUI
    return fake


def test_folders_come_from_folder_paths(comfy, models):
    assert adapter.folder_paths("vae") == [str(models / "vae")]
    assert adapter.folder_paths("diffusion_models") == [str(models / "diffusion_models"), str(adapter.BUNDLED_MODELS)]
    assert adapter.model_files("diffusion_models") == ["tiny_low.safetensors"]  # folder contents left out
    assert adapter.diffusers_folders() == [FOLDER, "tinyworld/"]  # the pack's bundled tiny world is listed too
    assert adapter.get_full_path("vae", "tiny_vae.safetensors") == str(models / "vae" / "tiny_vae.safetensors")
    assert CausalWanVAELoader.INPUT_TYPES()["required"]["vae_name"][0] == ["tiny_vae.safetensors", FOLDER,
                                                                          "tinyworld/"]


def test_the_tiny_world_start_image_is_offered_in_the_input_folder_once(comfy, models):
    target = models / "input" / "causalwan_tinyworld.png"
    assert adapter.offer_tiny_world_image() == target
    assert target.read_bytes() == (adapter.BUNDLED_MODELS / "start.png").read_bytes()
    target.write_bytes(b"the user's own picture")
    adapter.offer_tiny_world_image()
    assert target.read_bytes() == b"the user's own picture"  # never overwritten
    target.unlink()


def test_sampler_reports_to_comfyui(comfy):
    model = CausalWanModelLoader().load("none", "tiny_dense.safetensors", "none", "auto", -1.0, "resident")[0]
    vae = CausalWanVAELoader().load("tiny_vae.safetensors")[0]
    start = CausalWanImageConditioner().start(32, 32)[0]
    comfy.calls.clear()
    CausalWanChunkSampler().sample(model, start, conditioning(), 2, 0, "1000", 0.0, 3, 0, 0, vae=vae, unique_id="12")
    assert comfy.of("progress") == [("progress", 1, 2, "12", None), ("progress", 2, 2, "12", None)]
    events = comfy.of("causalwan.stream")  # sent by the preview thread, all before the node returns
    assert [(d["node"], d["kind"], d.get("chunk"), len(d["frames"]) if d["kind"] == "chunk" else d["frames"])
            for _, d in events] == [("12", "chunk", 1, 9), ("12", "chunk", 2, 12), ("12", "end", None, 21)]
    assert ("soft_empty_cache",) in comfy.calls and not comfy.of("unload_all_models")  # CPU: nothing to evict


def test_comfyui_interrupt_stops_between_chunks(comfy):
    model = CausalWanModelLoader().load("none", "tiny_dense.safetensors", "none", "auto", -1.0, "resident")[0]
    start = CausalWanImageConditioner().start(32, 32)[0]
    adapter.add_progress_listener(lambda v, *_: adapter.request_interrupt() if v == 1 else None)
    mm = comfy.modules["comfy.model_management"]
    with pytest.raises(mm.InterruptProcessingException):
        CausalWanChunkSampler().sample(model, start, conditioning(), 3, 0, "1000", 0.0, 3, 0, 0)
    assert [c[1] for c in comfy.of("progress")] == [1]
    assert comfy.interrupt is False
    ends = [d for _, d in comfy.of("causalwan.stream") if d["kind"] == "end"]
    assert [(d["state"], d["frames"]) for d in ends] == [("cancelled", 0)]  # the player shows the Cancel


def test_make_room_asks_comfyui_to_evict(comfy):
    adapter.make_room(1 << 30, "cuda:0")
    adapter.make_room(0, "cpu", unload_all=True)
    adapter.make_room(1 << 30, "cpu")
    assert [c for c in comfy.calls if c[0] != "soft_empty_cache"] == [
        ("free_memory", 1 << 30, "cuda:0"), ("unload_all_models",)]
    assert len(comfy.of("soft_empty_cache")) == 3
    assert adapter.torch_device() == torch.device("cpu")


def test_fallbacks_without_comfyui(models, monkeypatch, tmp_path):
    for name in ("folder_paths", "comfy.utils", "comfy.model_management", "server"):
        assert adapter.comfy(name) is None
    adapter.set_model_folders(None)
    monkeypatch.setenv("CAUSALWAN_MODELS_DIR", str(tmp_path))
    assert adapter.folder_paths("vae") == [str(tmp_path / "vae")]
    assert adapter.model_files("vae") == [] and adapter.diffusers_folders() == ["tinyworld/"]  # the bundled one
    assert adapter.offer_tiny_world_image() is None  # no ComfyUI input folder to put it in
    adapter.progress(1, 2)  # no ComfyUI, no listeners: nothing happens, nothing fails
    adapter.send_event({"chunk": 1})
    adapter.make_room(1 << 20)
    adapter.throw_if_interrupted()
    adapter.request_interrupt()
    with pytest.raises(adapter.Interrupted, match="interrupted"):
        adapter.throw_if_interrupted()
    adapter.throw_if_interrupted()
