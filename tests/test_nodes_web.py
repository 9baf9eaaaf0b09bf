"""web/causalwan_preview.js under Node.js with stub app/api modules and a minimal DOM: it registers one
extension, the "causalwan.chunk" event fills the sampler's preview, and the prompt switch draws its timeline."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

import causalwan

JS = Path(causalwan.__file__).parent / "web" / "causalwan_preview.js"

STUBS = {
    "scripts/app.js": """
export const app = { extensions: [], nodes: {}, graph: { getNodeById: (id) => app.nodes[id] ?? null },
  registerExtension(ext) { this.extensions.push(ext); } };
""",
    "scripts/api.js": """
export const api = { handlers: {}, addEventListener(name, fn) { (this.handlers[name] ??= []).push(fn); },
  emit(name, detail) { for (const fn of this.handlers[name] ?? []) fn({ detail }); } };
""",
}

DRIVER = """
class El {
  constructor(tag) { this.tag = tag; this.children = []; this.style = {}; this.textContent = ""; this.title = ""; }
  append(...c) { this.children.push(...c); } appendChild(c) { this.children.push(c); }
  replaceChildren(...c) { this.children = c; }
}
globalThis.document = { createElement: (t) => new El(t) };
globalThis.requestAnimationFrame = (f) => f();
const { app } = await import("./scripts/app.js");
const { api } = await import("./scripts/api.js");
await import("./extensions/causalwan/causalwan_preview.js");

function makeNode(id, comfyClass, widgets = [], inputs = []) {
  const node = { id, comfyClass, widgets, inputs, domWidgets: [], dirty: 0,
    addDOMWidget(name, type, el, opts) { const w = { name, type, el, options: opts }; this.domWidgets.push(w); return w; },
    setDirtyCanvas() { this.dirty += 1; } };
  app.nodes[id] = node;
  for (const ext of app.extensions) ext.nodeCreated?.(node);
  return node;
}
for (const ext of app.extensions) ext.setup?.();

const out = { extensions: app.extensions.map((e) => e.name), handlers: Object.keys(api.handlers) };
const sampler = makeNode(7, "CausalWanChunkSampler");
const other = makeNode(8, "CLIPTextEncode");
api.emit("causalwan.chunk", { node: "7", chunk: 2, chunks: 5, frames: 25, prompt: 1,
                              image: "data:image/jpeg;base64,AAAA" });
api.emit("causalwan.chunk", { node: "99", chunk: 1, chunks: 1, frames: 1, prompt: 0, image: null });
out.sampler = { widgets: sampler.domWidgets.map((w) => [w.name, w.options.serialize, w.serialize]),
  caption: sampler.causalwanPreview.caption.textContent, src: sampler.causalwanPreview.img.src,
  width: sampler.causalwanPreview.fill.style.width, dirty: sampler.dirty };
out.other = other.domWidgets.length;

const w = (name, value) => ({ name, value, callback: null });
const sw = makeNode(9, "CausalWanPromptSwitch",
  [w("switch_mode", "recache"), w("blend_chunks", 2), w("start_chunk_2", 3), w("start_chunk_3", 5), w("start_chunk_4", 6)],
  [{ name: "conditioning_1", link: 1 }, { name: "conditioning_2", link: 2 }, { name: "conditioning_3", link: 3 },
   { name: "conditioning_4", link: null }]);
const seg = () => sw.causalwanTimeline.bar.children.map((c) => c.textContent);
out.timeline = [seg(), sw.causalwanTimeline.caption.textContent];
sw.widgets[3].value = 2; sw.widgets[3].callback();
out.timeline_bad = sw.causalwanTimeline.caption.textContent;
sw.inputs[2].link = null; sw.onConnectionsChange();
out.timeline_two = seg();
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    root = tmp_path_factory.mktemp("web")
    for rel, text in STUBS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    ext = root / "extensions" / "causalwan"
    ext.mkdir(parents=True)
    shutil.copy(JS, ext / JS.name)
    (root / "driver.mjs").write_text(DRIVER)
    done = subprocess.run([node, "driver.mjs"], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_registers_one_extension_listening_to_the_chunk_event(result):
    assert result["extensions"] == ["causalwan.preview"]
    assert result["handlers"] == ["causalwan.chunk"]


def test_chunk_event_updates_the_sampler_preview(result):
    s = result["sampler"]
    assert s["widgets"] == [["causalwan_preview", False, False]]  # never serialised into the workflow
    assert s["caption"] == "chunk 2/5 · 25 frames · prompt 1"
    assert s["src"] == "data:image/jpeg;base64,AAAA"
    assert s["width"] == "40%" and s["dirty"] == 1
    assert result["other"] == 0


def test_prompt_switch_timeline(result):
    segments, caption = result["timeline"]
    assert segments == ["P1 @0", "P2 @3", "P3 @5"]  # prompt 4 is not connected
    assert caption == "3 prompt(s), switch: recache"
    assert result["timeline_bad"] == "prompt 3 must start after chunk 3"
    assert result["timeline_two"] == ["P1 @0", "P2 @3"]
