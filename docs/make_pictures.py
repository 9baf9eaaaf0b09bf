"""Remakes the pictures of the graph editor: the template thumbnails (example_workflows/<name>.jpg) and the
README's screenshots (docs/*.png), from a real ComfyUI server and headless Chromium. "Tiny world, ready to run"
runs as shipped (the bundled tiny world, so its player shows the shape moving, and so does the README's player
screenshot); the other workflows run on the tiny random models of the tests (their frames show noise).

    COMFYUI_DIR=/path/to/ComfyUI [COMFYUI_PYTHON=...] python3 docs/make_pictures.py

Needs what tests/test_browser_editor.py needs (a ComfyUI checkout, playwright, Debian's chromium).
"""
from __future__ import annotations

import io
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import browser_editor  # noqa: E402
import comfy_server  # noqa: E402
from comfy_home import (STUB_FOLDER, STUB_SOURCE, load_workflow, prepare, write_start_image,  # noqa: E402
                        write_tiny_models)
from shipped_workflows import PROMPT_SWITCH, TINY_WORLD, all_workflows  # noqa: E402
from workflow_format import ui_to_api  # noqa: E402

THUMB = 512  # px, square: the template browser shows thumbnails in square cards
SIZE = 64  # frames of the runs


def screen_box(editor, ids: list[int]) -> list[float]:
    """The screen box (x, y, w, h) around the nodes `ids`."""
    boxes = [editor.page.evaluate("""(id) => { const c = window.app.canvas, r = c.canvas.getBoundingClientRect();
        const s = c.ds.scale, o = c.ds.offset, b = window.app.graph.getNodeById(id).getBounding();
        return [r.left + (b[0] + o[0]) * s, r.top + (b[1] + o[1]) * s, b[2] * s, b[3] * s]; }""", i) for i in ids]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    return [x0, y0, x1 - x0, y1 - y0]


def square_clip(box: list[float], pad: float = 16) -> dict:
    x, y, w, h = box
    side = max(w, h) + 2 * pad
    return {"x": max(0, x + w / 2 - side / 2), "y": max(0, y + h / 2 - side / 2), "width": side, "height": side}


def save_jpeg(png: bytes, path: Path, side: int = THUMB) -> None:
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB").resize((side, side), Image.LANCZOS)
    im.save(path, "JPEG", quality=85, optimize=True)


def main() -> None:
    reason = browser_editor.skip_reason()
    if reason:
        sys.exit(reason)
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="causalwan-pictures-"))
    srv = comfy_server.ComfyServer(root, extra_node_folders={STUB_FOLDER: STUB_SOURCE})
    write_tiny_models(srv.models)
    write_start_image(srv.input / "example.png")
    srv.start()
    try:
        srv.post("/settings/LiteGraph.Canvas.LowQualityRenderingZoomThreshold", 0.1)  # text even when zoomed out
        with sync_playwright() as pw:
            browser = browser_editor.launch(pw)
            page = browser.new_page(viewport=browser_editor.VIEWPORT)
            ed = browser_editor.Editor(page, srv).open()
            info = srv.get("/object_info", timeout=60)
            for path in all_workflows():
                wf = json.loads(path.read_text())
                ed.load(wf)
                ids = {n["type"]: n["id"] for n in ed.nodes()}
                sampler = ids["CausalWanChunkSampler"]
                around = [i for k, i in ids.items() if k in ("CausalWanChunkSampler", "CausalWanContinue",
                                                             "CausalWanPromptSwitch", "CausalWanImageConditioner")]
                ed.fit(around, margin=20)
                if path.name == TINY_WORLD:  # as shipped: the bundled model and start image
                    ed.queue(ui_to_api(load_workflow(path.name), info))
                else:
                    ed.queue(prepare(path.name, info, size=SIZE)[0])
                ed.wait_player(sampler, "Number(d.chunks) >= 3 || d.end")
                if path.name == TINY_WORLD:
                    page.screenshot(path=str(REPO / "docs" / "player_mid_run.png"))
                save_jpeg(page.screenshot(clip=square_clip(screen_box(ed, [sampler]))), path.with_suffix(".jpg"))
                ed.wait_idle(600)
                if path.name == PROMPT_SWITCH:  # the whole workflow after its run
                    ed.fit(margin=20)
                    page.screenshot(path=str(REPO / "docs" / "workflow_prompt_switch.png"))
                print("pictures of", path.name)
            browser.close()
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
