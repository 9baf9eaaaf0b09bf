"""web/*.js under Node.js with stub app/api modules, a stub graph and a minimal DOM: the extension registers
once, the stream player collects every frame of the "causalwan.stream" events, names the prompt in force from
the graph, plays at the fps of the CreateVideo node, and shows how the run ended; the prompt timeline warns
about a switch after the sampler's last chunk; the text panels show the text a node sends. Over a 3000-chunk
run the player holds its frames within a byte budget (web/frame_store.js), releasing the oldest chunks' frames,
with a scrub bar that still places every chunk and shades the released part. The real browser test is
tests/test_browser_editor.py."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

import causalwan

WEB = Path(causalwan.__file__).parent / "web"

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

DRIVER = r"""
class El {
  constructor(tag) { this.tag = tag; this.children = []; this.style = {}; this.dataset = {}; this.textContent = "";
    this.title = ""; this.attrs = {}; }
  append(...c) { this.children.push(...c); } appendChild(c) { this.children.push(c); }
  replaceChildren(...c) { this.children = c; } addEventListener() {}
  setAttribute(k, v) { this.attrs[k] = v; } getAttribute(k) { return this.attrs[k] ?? null; }
  set src(v) { this.attrs.src = v; } get src() { return this.attrs.src ?? ""; }
  getBoundingClientRect() { return { left: 0, top: 0, width: 100, height: 14 }; }
}
globalThis.document = { createElement: (t) => new El(t) };
globalThis.window = { addEventListener() {}, removeEventListener() {} };
const timers = [];
globalThis.setInterval = (fn, ms) => { timers.push({ fn, ms }); return timers.length; };
globalThis.clearInterval = (id) => { if (id) timers[id - 1] = null; };
const tickAll = () => timers.forEach((t) => t?.fn());
const { app } = await import("./scripts/app.js");
const { api } = await import("./scripts/api.js");
await import("./extensions/causalwan/causalwan.js");

// a graph: text encoders -> prompt switch -> sampler -> decode -> CreateVideo(fps 24); encoder -> continue
const links = {}; // "id:slot" -> [source node]
function makeNode(id, type, { widgets = [], inputs = [], outputs = 0, title } = {}) {
  const node = { id, type, comfyClass: type, title: title ?? type, widgets, inputs: inputs.map((name) => ({ name })),
    outputs: Array.from({ length: outputs }, () => ({})), domWidgets: [], constructor: { title: type },
    addDOMWidget(name, kind, el, opts) { const w = { name, type: kind, el, options: opts }; this.domWidgets.push(w); return w; },
    isInputConnected(slot) { return !!links[`${id}:${slot}`]; }, getInputNode(slot) { return links[`${id}:${slot}`] ?? null; },
    getOutputNodes() { return Object.entries(links).filter(([, src]) => src === node)
      .map(([key]) => app.nodes[key.split(":")[0]]); },
    setDirtyCanvas() {} };
  app.nodes[id] = node;
  for (const ext of app.extensions) ext.nodeCreated?.(node);
  return node;
}
const link = (src, dst, name) => { links[`${dst.id}:${dst.inputs.findIndex((i) => i.name === name)}`] = src; };
const w = (name, value) => ({ name, value, callback: null });
for (const ext of app.extensions) ext.setup?.();

const enc = (id, title, text) => makeNode(id, "CLIPTextEncode", { widgets: [w("text", text)], outputs: 1, title });
const p1 = enc(1, "Prompt 1", "a fox in the snow"), p2 = enc(2, "Prompt 2", "the fox looks up"),
      p4 = enc(4, "Prompt 4", "evening falls");
const sw = makeNode(9, "CausalWanPromptSwitch", { widgets: [w("switch_mode", "recache"), w("blend_chunks", 2),
  w("start_chunk_2", 1), w("start_chunk_3", 5), w("start_chunk_4", 6)],
  inputs: ["conditioning_1", "conditioning_2", "conditioning_3", "conditioning_4"], outputs: 1 });
link(p1, sw, "conditioning_1"); link(p2, sw, "conditioning_2");
const sampler = makeNode(12, "CausalWanChunkSampler", { widgets: [w("num_chunks", 3)], inputs: ["model", "prompts"], outputs: 2 });
link(sw, sampler, "prompts");
const decode = makeNode(14, "CausalWanDecode", { inputs: ["latent"], outputs: 1 });
link(sampler, decode, "latent");
const create = makeNode(15, "CreateVideo", { widgets: [w("fps", 24)], inputs: ["images"], outputs: 1 });
link(decode, create, "images");
const cont = makeNode(13, "CausalWanContinue", { widgets: [w("num_chunks", 2)], inputs: ["stream", "prompts"], outputs: 2 });
link(sampler, cont, "stream"); link(p4, cont, "prompts");
const loader = makeNode(2, "CausalWanModelLoader", { outputs: 2 });
const other = makeNode(8, "VAEDecode");

const out = { extensions: app.extensions.map((e) => e.name), handlers: Object.keys(api.handlers).sort(),
  panels: Object.fromEntries(Object.values(app.nodes).map((n) => [n.type, n.domWidgets.map((d) =>
    [d.name, d.options.serialize, d.options.getMinHeight(), d.options.getMaxHeight()])])) };

const frames = (n, tag) => Array.from({ length: n }, (_, i) => `data:image/jpeg;base64,${tag}${i}`);
const chunk = (node, run, k, first, n, prompt, total) => api.emit("causalwan.stream",
  { node, run, kind: "chunk", chunk: k, chunks: 3, first, frames: frames(n, `${k}_`), total_frames: total, fps: 16, prompt });
const player = sampler.causalwanPlayer;
chunk("12", "r1", 1, 0, 13, 1, 37);
out.first = { ...player.root.dataset, src: player.img.src, badge: player.badge.textContent, caption: player.caption.textContent };
for (let i = 0; i < 5; i++) tickAll();
out.played = { ...player.root.dataset };
chunk("12", "r1", 2, 13, 12, 2, 37);
chunk("12", "r1", 3, 25, 12, 2, 37);
api.emit("causalwan.stream", { node: "12", run: "r1", kind: "end", state: "done", error: "", frames: 37 });
player.seek(36);
out.done = { ...player.root.dataset, badge: player.badge.textContent, caption: player.caption.textContent,
  segments: player.segments.children.map((s) => [s.style.cssText, s.title]) };
player.pause(); const frozen = player.frame; tickAll(); out.paused = [player.root.dataset.mode, player.frame === frozen];
player.goLive(); out.live = [player.root.dataset.mode, player.frame];
// a new run resets the player; a Cancel from ComfyUI (before the node could say so) shows
chunk("12", "r2", 1, 0, 13, 1, 37);
out.reset = [player.root.dataset.frames, player.root.dataset.run];
api.emit("execution_interrupted", { node_id: "12" });
out.cancelled = [player.root.dataset.end, player.badge.textContent];
// Continue: its own CONDITIONING (slot 0), labelled by the text encoder's title and text
api.emit("causalwan.stream", { node: "13", run: "c1", kind: "chunk", chunk: 1, chunks: 2, first: 0, frames: frames(12, "c"),
  total_frames: 24, fps: 16, prompt: 0 });
api.emit("execution_error", { node_id: "13", exception_message: "out of memory" });
out.cont = [cont.causalwanPlayer.caption.textContent, cont.causalwanPlayer.root.dataset.end, cont.causalwanPlayer.root.dataset.fps];
api.emit("causalwan.stream", { node: "99", run: "x", kind: "chunk", chunk: 1, chunks: 1, first: 0, frames: [], prompt: 0 });
out.other = other.domWidgets.length;

// the timeline: prompt 2 from chunk 1 over the sampler's 3 chunks; prompt 3 from chunk 5 is beyond them
const tl = () => [sw.causalwanTimeline.bar.children.map((c) => c.textContent), sw.causalwanTimeline.caption.textContent];
sw.onDrawBackground(); out.timeline = tl();
const p3 = enc(3, "Prompt 3", "it leaps"); link(p3, sw, "conditioning_3");
sw.onDrawBackground(); out.timeline_beyond = tl();
sampler.widgets[0].value = 8; sw.onDrawBackground(); out.timeline_fixed = tl();
sw.widgets[2].value = 6; sw.onDrawBackground(); out.timeline_order = tl()[1];

// the memory plan on the loader, sent as the "text" of the executed message
out.text_before = loader.causalwanText.textContent;
loader.onExecuted({ text: ["expert pair (high/low noise): 2 x 14.29B params, offload swap"] });
out.text_after = loader.causalwanText.textContent;
console.log(JSON.stringify(out));
process.exit(0);
"""


BOUND_DRIVER = r"""
class El {
  constructor() { this.children = []; this.style = {}; this.dataset = {}; this.textContent = ""; this.title = "";
    this.src = ""; }
  append(...c) { this.children.push(...c); } replaceChildren(...c) { this.children = c; } addEventListener() {}
}
globalThis.document = { createElement: () => new El() };
globalThis.setInterval = () => 1; globalThis.clearInterval = () => {};
const { FrameStore, FRAME_BYTE_BUDGET, frameAtFraction } = await import("./extensions/causalwan/frame_store.js");
const { StreamPlayer } = await import("./extensions/causalwan/stream_player.js");
const out = { default_budget: FRAME_BYTE_BUDGET };

// a window+sinks stream of 3000 chunks (1 + 12 frames, then 12) of 1000-byte frames under a 100 kB budget
const released = [];
const player = new StreamPlayer({ store: new FrameStore({ budget: 100000, release: (src) => released.push(src) }) });
const src = (f) => `data:image/jpeg;base64,${String(f).padStart(8, "0")}`.padEnd(1000, "A");
let first = 0, peak = 0;
const chunk = (k) => {
  const n = k === 1 ? 13 : 12;
  player.addChunk({ run: "r", kind: "chunk", chunk: k, chunks: 3000, first, total_frames: 1 + 12 * 3000, fps: 16,
    prompt: k <= 1500 ? 1 : 2, frames: Array.from({ length: n }, (_, i) => src(first + i)) });
  first += n; peak = Math.max(peak, player.store.bytes);
};
for (let k = 1; k <= 3000; k++) chunk(k);
const st = player.store;
out.after = { ...player.root.dataset, bytes: st.bytes, peak, start: st.start, store_end: st.end,
  released_count: released.length, released_in_order: released.every((s, i) => s === src(i)),
  before_start: st.get(st.start - 1) ?? null, at_start: st.get(st.start) === src(st.start),
  newest: st.get(st.end - 1) === src(st.end - 1), img_newest_chunk: player.img.src.slice(0, 31) };
// the scrub bar: every chunk's box where its frames are, the released part shaded, clicks mapped to held frames
const segs = player.segments.children;
out.track = { boxes: segs.length, chunk1500: [segs[1499].style.cssText, segs[1499].title],
  shaded: player.releasedBox.style.width,
  at0: frameAtFraction(0, 36001, st), at_half: frameAtFraction(0.5, 36001, st),
  at_held: frameAtFraction(0.999, 36001, st), at1: frameAtFraction(1, 36001, st) };
player.seek(5); out.seek_released = [player.root.dataset.frame, player.root.dataset.mode];
// paused on the oldest held frame: the next chunks release it and the player moves to the oldest still held
chunk(3001); out.moved = [player.root.dataset.frame, player.store.start];
player.goLive(); chunk(3002); out.live = [player.root.dataset.mode, player.root.dataset.frame];
player.tick(); out.live_tick = player.root.dataset.frame;
// a new run lets go of every frame; blob: URLs are revoked
const before = released.length;
player.addChunk({ run: "r2", kind: "chunk", chunk: 1, chunks: 1, first: 0, total_frames: 1, fps: 16, prompt: 1,
  frames: [src(0)] });
out.new_run = [released.length - before, player.store.held, player.root.dataset.released];
const revoked = []; URL.revokeObjectURL = (u) => revoked.push(u);
const blobs = new FrameStore({ budget: 10 });
blobs.add(0, ["blob:a", "blob:b"]); blobs.add(2, ["blob:c"]); blobs.add(3, ["data:x"]); blobs.clear();
out.revoked = revoked;
// the default budget with 20 kB frames: 64 MB, about 3300 frames
const big = new FrameStore(); const body = "B".repeat(20000);
for (let k = 0; k < 2000; k++) big.add(12 * k, Array.from({ length: 12 }, (_, i) => body + (12 * k + i)));
out.default_run = [big.bytes, big.held, big.start, big.end];
console.log(JSON.stringify(out));
process.exit(0);
"""


def run_driver(root: Path, driver: str) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    for rel, text in STUBS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    ext = root / "extensions" / "causalwan"
    ext.mkdir(parents=True)
    for js in WEB.glob("*.js"):
        shutil.copy(js, ext / js.name)
    (root / "driver.mjs").write_text(driver)
    done = subprocess.run([node, "driver.mjs"], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return run_driver(tmp_path_factory.mktemp("web"), DRIVER)


@pytest.fixture(scope="module")
def bounded(tmp_path_factory):
    return run_driver(tmp_path_factory.mktemp("web"), BOUND_DRIVER)


def test_one_extension_with_fixed_height_panels_never_saved(result):
    assert result["extensions"] == ["causalwan.stream"]
    assert result["handlers"] == ["causalwan.stream", "execution_error", "execution_interrupted"]
    panels = result["panels"]
    assert panels["CausalWanChunkSampler"] == [["causalwan_player", False, 278, 278]]
    assert panels["CausalWanContinue"] == [["causalwan_player", False, 278, 278]]
    assert panels["CausalWanPromptSwitch"] == [["causalwan_timeline", False, 48, 48]]
    assert panels["CausalWanModelLoader"] == [["causalwan_text", False, 64, 64]]
    assert panels["CLIPTextEncode"] == [] and result["other"] == 0


def test_player_collects_every_frame_and_plays_at_the_video_fps(result):
    first = result["first"]
    assert (first["frames"], first["frame"], first["total"], first["mode"], first["fps"]) == ("13", "0", "37", "live", "24")
    assert first["src"] == "data:image/jpeg;base64,1_0" and first["badge"] == "● live"
    assert first["caption"] == "chunk 1/3 · Prompt 1: a fox in the snow"
    assert (result["played"]["frame"], result["played"]["played"]) == ("5", "5")  # five timer ticks, five frames
    done = result["done"]
    assert (done["frames"], done["chunks"], done["end"], done["badge"]) == ("37", "3", "done", "done")
    assert done["caption"] == "chunk 3/3 · Prompt 2: the fox looks up"
    assert [s[1] for s in done["segments"]] == ["chunk 1/3: Prompt 1: a fox in the snow",
                                                "chunk 2/3: Prompt 2: the fox looks up",
                                                "chunk 3/3: Prompt 2: the fox looks up"]
    assert f"left:{100 * 13 / 37}%;width:{100 * 12 / 37}%" in done["segments"][1][0]  # chunk 2 on the scrub bar
    assert result["paused"] == ["paused", True]
    assert result["live"] == ["live", 25]  # live jumps to the newest chunk


def test_player_shows_new_runs_cancel_and_failure(result):
    assert result["reset"] == ["13", "r2"]
    assert result["cancelled"] == ["cancelled", "cancelled at chunk 1/3"]
    caption, end, fps = result["cont"]
    assert caption == "failed: out of memory" and end == "failed" and fps == "16"  # no CreateVideo after it


def test_timeline_warns_about_a_switch_after_the_last_chunk(result):
    assert result["timeline"] == [["P1 @0", "P2 @1"], "2 prompt(s) over 3 chunks, switch: recache"]
    segments, caption = result["timeline_beyond"]
    assert segments == ["P1 @0", "P2 @1", "P3 @5"]
    assert caption == ("⚠ prompt 3 starts at chunk 5, but CausalWanChunkSampler makes chunks 0-2: raise its "
                       "num_chunks or start the prompt earlier")
    assert result["timeline_fixed"][1] == "3 prompt(s) over 8 chunks, switch: recache"
    assert result["timeline_order"] == "⚠ prompt 3 must start after chunk 6"


def test_text_panel_shows_what_the_node_sent(result):
    assert result["text_before"] == "the memory plan appears here after a run"
    assert result["text_after"] == "expert pair (high/low noise): 2 x 14.29B params, offload swap"



def test_player_holds_frames_within_a_byte_budget_releasing_the_oldest_chunks(bounded):
    a = bounded["after"]
    # 3000 chunks of 12 kB (13 kB the first) under 100 kB: the newest 8 chunks held, every older frame released,
    # each once and oldest first; the counters still count the whole run
    assert (a["bytes"], a["peak"], a["held"], a["start"], a["store_end"]) == (96000, 97000, "96", 36001 - 96, 36001)
    assert (a["frames"], a["total"], a["chunks"], a["released"]) == ("36001", "36001", "3000", str(36001 - 96))
    assert a["released_count"] == 36001 - 96 and a["released_in_order"]
    assert a["before_start"] is None and a["at_start"] and a["newest"]
    assert (a["mode"], a["frame"]) == ("live", "35989")  # live follows the newest chunk as before
    assert a["img_newest_chunk"] == "data:image/jpeg;base64,00035989"
    # the default budget: 64 MiB, about 3300 frames of 20 kB over a 24000-frame run
    assert bounded["default_budget"] == 64 * 1024 * 1024
    size, held, start, end = bounded["default_run"]
    assert size <= 64 * 1024 * 1024 and held == 3348 and (start, end) == (24000 - 3348, 24000)
    assert size == sum(20000 + len(str(f)) for f in range(start, end))


def test_scrub_bar_stays_truthful_after_frames_are_released(bounded):
    t = bounded["track"]
    assert t["boxes"] == 3000  # every chunk keeps its box, coloured by its prompt
    style, title = t["chunk1500"]
    assert f"left:{100 * (13 + 12 * 1498) / 36001}%;width:{100 * 12 / 36001}%" in style
    assert title == "chunk 1500/3000: prompt 1"
    assert t["shaded"] == f"{100 * (36001 - 96) / 36001}%"  # the released part, shaded
    held_from = 36001 - 96
    assert (t["at0"], t["at_half"]) == (held_from, held_from)  # a click on the released part: oldest held frame
    assert (t["at_held"], t["at1"]) == (int(0.999 * 36001), 36000)
    assert bounded["seek_released"] == [str(held_from), "playing"]
    assert bounded["moved"] == [str(held_from + 12), held_from + 12]  # its frame released: moves to the oldest held
    # live: from the newest chunk (3001, frames 36001-36012) on, playing on while chunk 3002 arrives
    assert bounded["live"] == ["live", "36001"] and bounded["live_tick"] == "36002"


def test_a_new_run_releases_every_frame_and_blob_urls_are_revoked(bounded):
    assert bounded["new_run"] == [96, 1, "0"]
    assert bounded["revoked"] == ["blob:a", "blob:b", "blob:c"]
