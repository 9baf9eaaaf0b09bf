"""What a user sees in ComfyUI's graph editor, checked in a real headless Chromium (skipped unless COMFYUI_DIR
points at a ComfyUI checkout and a browser is installed; see tests/browser_editor.py).

A real ComfyUI server (tests/comfy_server.py) with tiny models (tests/comfy_home.py) serves the editor; the
checks run once with the frontend the server ships and once more with $COMFYUI_FRONTEND_ROOT when set (a newer
comfyui-frontend-package). Every shipped workflow is loaded and its node boxes are read from the editor: no
node overlaps another and every panel of the pack lies inside its own node. Then the prompt-switch workflow is
run on the tiny models under the page's own client id (the page gets the run's websocket events as after Run):
both stream players receive every frame of every chunk, name the prompt in force, and play at the video's fps.
A long run is cancelled with the frontend's own interrupt call and the player shows "cancelled". The template
browser lists each workflow once, with its thumbnail. $CAUSALWAN_SCREENSHOTS (a folder) keeps screenshots.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

import browser_editor

_reason = browser_editor.skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

import comfy_server  # noqa: E402
from browser_editor import Editor, inside, overlaps  # noqa: E402
from comfy_home import STUB_FOLDER, STUB_SOURCE, prepare, write_start_image, write_tiny_models  # noqa: E402
from shipped_workflows import PROMPT_SWITCH, T2V_DENSE, all_workflows  # noqa: E402

SIZE = 32  # pixels per side of the runs here
SHORT = {"CausalWanChunkSampler": {"num_chunks": 6}, "CausalWanContinue": {"num_chunks": 2}}  # prompt 3 from 5
SHOTS = Path(os.environ["CAUSALWAN_SCREENSHOTS"]) if os.environ.get("CAUSALWAN_SCREENSHOTS") else None


@pytest.fixture(scope="module", params=browser_editor.frontends(), ids=lambda f: "newer-frontend" if f else "server-frontend")
def editor(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("comfyui-browser")
    args = ("--front-end-root", request.param) if request.param else ()
    srv = comfy_server.ComfyServer(root, extra_node_folders={STUB_FOLDER: STUB_SOURCE}, args=args)
    write_tiny_models(srv.models)
    write_start_image(srv.input / "example.png")
    try:
        srv.start()
        with sync_playwright() as pw:
            browser = browser_editor.launch(pw)
            try:
                page = browser.new_page(viewport=browser_editor.VIEWPORT)
                ed = Editor(page, srv).open()
                ed.info = srv.get("/object_info", timeout=60)
                ed.tag = "newer" if request.param else "server"
                yield ed
            finally:
                browser.close()
    finally:
        srv.stop()
        print(f"\nComfyUI log: {srv.log_path}")


def shot(editor, name: str, clip: dict | None = None) -> None:
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        editor.page.screenshot(path=str(SHOTS / f"{editor.tag}-{editor.version}-{name}.png"), clip=clip)


def workflow(name: str) -> dict:
    return json.loads((all_workflows()[0].parent / name).read_text())


def node_of(editor, kind: str) -> int:
    (node,) = [n["id"] for n in editor.nodes() if n["type"] == kind]
    return node


@pytest.mark.parametrize("path", all_workflows(), ids=lambda p: p.stem)
def test_workflow_loads_without_overlapping_nodes(editor, path):
    editor.load(json.loads(path.read_text()))
    editor.fit()
    nodes = editor.nodes()
    assert len(nodes) == len(json.loads(path.read_text())["nodes"])
    clashes = [(a["title"], b["title"]) for i, a in enumerate(nodes) for b in nodes[i + 1:]
               if overlaps(a["box"], b["box"])]
    assert clashes == [], f"{path.stem}: overlapping nodes {clashes}"
    panels = editor.panels()
    kinds = {n["id"]: n["type"] for n in nodes}
    want = {k for k in kinds.values() if k in ("CausalWanChunkSampler", "CausalWanContinue", "CausalWanPromptSwitch",
                                                "CausalWanModelLoader", "CausalWanImageConditioner")}
    assert {kinds[p["node"]] for p in panels} == want
    for p in panels:
        assert p["visible"] and inside(p["panel"], p["owner"]), f"{p['name']} of node {p['node']} spills: {p}"
    shot(editor, f"layout-{path.stem}")


def test_player_gets_every_frame_names_the_prompt_and_plays(editor):
    wf = workflow(PROMPT_SWITCH)
    editor.load(wf)
    sampler, cont = node_of(editor, "CausalWanChunkSampler"), node_of(editor, "CausalWanContinue")
    assert editor.player(sampler)["frames"] == "0"
    prompt, ids = prepare(PROMPT_SWITCH, editor.info, SHORT, size=SIZE)
    chunks = prompt[str(sampler)]["inputs"]["num_chunks"]
    more = prompt[str(cont)]["inputs"]["num_chunks"]
    editor.fit([sampler, cont, node_of(editor, "CausalWanPromptSwitch")])
    editor.queue(prompt)
    live = editor.wait_player(sampler, "Number(d.chunks) >= 2 && !d.end")  # mid-run: frames arrive and play
    assert live["mode"] == "live" and live["badge"] == "● live" and live["src"].startswith("data:image/jpeg")
    shot(editor, "player-mid-run")
    done = editor.wait_player(cont, "d.end === 'done'")
    s = editor.player(sampler)
    assert (s["end"], s["chunks"], s["frames"], s["total"]) == ("done", str(chunks), str(1 + 12 * chunks),
                                                                str(1 + 12 * chunks))
    assert (done["chunks"], done["frames"], done["total"]) == (str(more), str(12 * more), str(12 * more))
    assert s["segments"] == chunks and done["segments"] == more  # the scrub bar marks every chunk
    assert int(s["played"]) > 0  # live playback showed frames while the run went on
    # the prompt in force, by the names the workflow gives: the sampler's last chunk is under prompt 3 (from
    # chunk 5), Continue's chunks under the CONDITIONING it is fed, titled "Prompt 4"
    for node in (sampler, cont):
        editor.page.evaluate("(id) => window.app.graph.getNodeById(id).causalwanPlayer.seek(1e9)", node)
    assert editor.player(sampler)["caption"].startswith(f"chunk {chunks}/{chunks} · Prompt 3: The fox leaps")
    assert editor.player(cont)["caption"].startswith(f"chunk {more}/{more} · Prompt 4: Evening falls")
    # play from the start: the playhead moves at the video's fps (CreateVideo's 16)
    editor.page.evaluate("(id) => { const p = window.app.graph.getNodeById(id).causalwanPlayer; p.seek(0); p.play(); }",
                         sampler)
    t0, f0 = time.monotonic(), int(editor.player(sampler)["frame"])
    editor.page.wait_for_timeout(1500)
    rate = (int(editor.player(sampler)["frame"]) - f0) / (time.monotonic() - t0)
    assert editor.player(sampler)["fps"] == "16" and 8 <= rate <= 20, rate
    # the text panels: the memory plan and the start's size, without wiring
    texts = editor.page.evaluate("""() => Object.fromEntries(window.app.graph._nodes.filter((n) => n.causalwanText)
        .map((n) => [n.type, n.causalwanText.textContent]))""")
    assert "offload" in texts["CausalWanModelLoader"]
    assert texts["CausalWanImageConditioner"].startswith(f"image to video, {SIZE}x{SIZE}")
    editor.wait_idle()


def test_timeline_warns_when_a_switch_lies_beyond_the_samplers_chunks(editor):
    editor.load(workflow(PROMPT_SWITCH))
    switch, sampler = node_of(editor, "CausalWanPromptSwitch"), node_of(editor, "CausalWanChunkSampler")
    problem = "(id) => window.app.graph.getNodeById(id).causalwanTimeline.box.dataset.problem ?? ''"
    assert editor.page.evaluate(problem, switch) == ""
    editor.set_widget(sampler, "num_chunks", 4)  # prompt 3 starts at chunk 5
    assert editor.page.evaluate(problem, switch).startswith("prompt 3 starts at chunk 5, but CausalWan Chunk "
                                                            "Sampler makes chunks 0-3")
    editor.set_widget(sampler, "num_chunks", 6)
    assert editor.page.evaluate(problem, switch) == ""


def test_cancel_shows_in_the_player(editor):
    editor.load(workflow(T2V_DENSE))
    sampler = node_of(editor, "CausalWanChunkSampler")
    long_run = {"CausalWanChunkSampler": {"num_chunks": 400, "window_frames": 12, "sink_frames": 3}}
    prompt, _ = prepare(T2V_DENSE, editor.info, long_run, size=SIZE)
    editor.queue(prompt)
    editor.wait_player(sampler, "Number(d.chunks) >= 2")
    editor.cancel()
    s = editor.wait_player(sampler, "d.end === 'cancelled'")
    assert s["badge"].startswith("cancelled at chunk ") and s["badge"].endswith("/400")
    assert 2 <= int(s["chunks"]) < 400 and int(s["frames"]) == 12 * int(s["chunks"]) - 3
    editor.fit([sampler])
    shot(editor, "player-cancelled")
    editor.wait_idle()


def test_template_browser_lists_each_workflow_once_with_its_thumbnail(editor):
    cards = editor.template_cards(comfy_server.PACK_NAME)
    names = sorted(c["name"] for c in cards)
    assert names == sorted(p.stem for p in all_workflows())  # each once
    fetched = {unquote(url.rsplit("/", 1)[-1]) for url, status in editor.responses
               if f"/workflow_templates/{comfy_server.PACK_NAME}/" in url and status == 200}
    for c in cards:
        assert f"{c['name']}.jpg" in fetched, f"{c['name']}: its thumbnail was not served"
        assert [512, 512] in c["thumbs"], f"{c['name']}: no thumbnail shown ({c['thumbs']})"
    shot(editor, "templates")
    editor.close_dialogs()
