// CausalWan frontend: a live stream preview inside the sampler / continue nodes, fed by the "causalwan.chunk"
// event the nodes send after every chunk, and a prompt timeline inside CausalWan Prompt Switch.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EVENT = "causalwan.chunk";
const STREAM_NODES = ["CausalWanChunkSampler", "CausalWanContinue"];
const SWITCH_NODE = "CausalWanPromptSwitch";
const SLOTS = [2, 3, 4];
const COLORS = ["#3d6fb6", "#b6623d", "#4f9a58", "#8a4fb0"];

function addPanel(node, name, element, height) {
  const widget = node.addDOMWidget(name, "causalwan", element, {
    serialize: false, // never part of widgets_values or of the API prompt
    hideOnZoom: false,
    getMinHeight: () => height,
  });
  widget.serialize = false;
  return widget;
}

// ------------------------------------------------------------------ live preview
function makePreview(node) {
  const box = document.createElement("div");
  box.style.cssText = "display:flex;flex-direction:column;gap:4px;width:100%;font:12px sans-serif;color:#ccc";
  const img = document.createElement("img");
  img.style.cssText = "width:100%;max-height:260px;object-fit:contain;background:#111;border-radius:4px;display:none";
  const caption = document.createElement("div");
  caption.textContent = "waiting for the first chunk";
  const bar = document.createElement("div");
  bar.style.cssText = "height:4px;background:#333;border-radius:2px;overflow:hidden";
  const fill = document.createElement("div");
  fill.style.cssText = "height:100%;width:0;background:#4f9a58;transition:width .2s";
  bar.appendChild(fill);
  box.append(img, bar, caption);
  addPanel(node, "causalwan_preview", box, 90);
  node.causalwanPreview = { img, caption, fill };
}

function showChunk(detail) {
  const node = app.graph?.getNodeById?.(Number(detail.node)) ?? app.graph?.getNodeById?.(detail.node);
  const view = node?.causalwanPreview;
  if (!view) return;
  if (detail.image) {
    view.img.src = detail.image;
    view.img.style.display = "block";
  }
  const prompt = detail.prompt ? ` · prompt ${detail.prompt}` : "";
  view.caption.textContent = `chunk ${detail.chunk}/${detail.chunks} · ${detail.frames} frames${prompt}`;
  view.fill.style.width = `${Math.round((100 * detail.chunk) / Math.max(1, detail.chunks))}%`;
  node.setDirtyCanvas?.(true, true);
}

// ------------------------------------------------------------------ prompt timeline
function timelineEntries(node) {
  const entries = [{ prompt: 1, chunk: 0 }];
  for (const k of SLOTS) {
    const linked = node.inputs?.find((i) => i.name === `conditioning_${k}`)?.link != null;
    const start = node.widgets?.find((w) => w.name === `start_chunk_${k}`)?.value;
    if (linked && Number.isFinite(start)) entries.push({ prompt: k, chunk: start });
  }
  return entries;
}

function drawTimeline(node) {
  const view = node.causalwanTimeline;
  if (!view) return;
  const entries = timelineEntries(node);
  const last = entries[entries.length - 1].chunk + 2;
  view.bar.replaceChildren();
  let problem = "";
  entries.forEach((e, i) => {
    const end = i + 1 < entries.length ? entries[i + 1].chunk : last;
    if (end <= e.chunk) problem = `prompt ${entries[i + 1].prompt} must start after chunk ${e.chunk}`;
    const seg = document.createElement("div");
    seg.style.cssText = `flex:${Math.max(1, end - e.chunk)};background:${COLORS[(e.prompt - 1) % 4]};` +
      "padding:2px 4px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis";
    seg.textContent = `P${e.prompt} @${e.chunk}`;
    seg.title = `prompt ${e.prompt} from chunk ${e.chunk}` + (i + 1 < entries.length ? ` to ${end - 1}` : " on");
    view.bar.appendChild(seg);
  });
  const mode = node.widgets?.find((w) => w.name === "switch_mode")?.value ?? "cut";
  view.caption.textContent = problem || `${entries.length} prompt(s), switch: ${mode}`;
  view.caption.style.color = problem ? "#e66" : "#ccc";
}

function makeTimeline(node) {
  const box = document.createElement("div");
  box.style.cssText = "display:flex;flex-direction:column;gap:3px;width:100%;font:11px sans-serif;color:#eee";
  const bar = document.createElement("div");
  bar.style.cssText = "display:flex;width:100%;border-radius:4px;overflow:hidden;min-height:18px";
  const caption = document.createElement("div");
  box.append(bar, caption);
  addPanel(node, "causalwan_timeline", box, 44);
  node.causalwanTimeline = { bar, caption };
  for (const w of node.widgets ?? []) {
    const original = w.callback;
    w.callback = function () {
      const r = original?.apply(this, arguments);
      drawTimeline(node);
      return r;
    };
  }
  const onConnectionsChange = node.onConnectionsChange;
  node.onConnectionsChange = function () {
    const r = onConnectionsChange?.apply(this, arguments);
    drawTimeline(node);
    return r;
  };
  const onConfigure = node.onConfigure;
  node.onConfigure = function () {
    const r = onConfigure?.apply(this, arguments);
    requestAnimationFrame(() => drawTimeline(node));
    return r;
  };
  drawTimeline(node);
}

app.registerExtension({
  name: "causalwan.preview",
  setup() {
    api.addEventListener(EVENT, (event) => showChunk(event.detail));
  },
  nodeCreated(node) {
    if (STREAM_NODES.includes(node.comfyClass)) makePreview(node);
    if (node.comfyClass === SWITCH_NODE) makeTimeline(node);
  },
});
