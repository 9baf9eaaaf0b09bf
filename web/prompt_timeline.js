// The prompt timeline inside CausalWan Prompt Switch: one coloured segment per connected prompt, from its
// start chunk on, over the chunks of the sampler (or Continue) it feeds; it warns in the editor when a prompt
// starts after that node's last chunk (the run would refuse it) or not after the prompt before it.
import { addPanel, el } from "./dom_panel.js";
import { downstream, isConnected, widgetValue } from "./graph_links.js";
import { slotColor } from "./prompt_labels.js";

export const STREAM_NODES = ["CausalWanChunkSampler", "CausalWanContinue"];
const SLOTS = [2, 3, 4];
const HEIGHT = 48;

export function timelineEntries(node) {
  const entries = [{ prompt: 1, chunk: 0 }];
  for (const k of SLOTS) {
    const start = widgetValue(node, `start_chunk_${k}`);
    if (isConnected(node, `conditioning_${k}`) && Number.isFinite(start)) entries.push({ prompt: k, chunk: start });
  }
  return entries;
}

// The stream nodes this timeline feeds, with their chunk counts.
export function fedNodes(node) {
  return downstream(node, 1)
    .filter((n) => STREAM_NODES.includes(n.comfyClass ?? n.type))
    .map((n) => ({ node: n, chunks: widgetValue(n, "num_chunks") }))
    .filter((f) => Number.isFinite(f.chunks));
}

export function timelineProblem(entries, fed) {
  for (let i = 1; i < entries.length; i++) {
    if (entries[i].chunk <= entries[i - 1].chunk) {
      return `prompt ${entries[i].prompt} must start after chunk ${entries[i - 1].chunk}`;
    }
  }
  const last = entries[entries.length - 1];
  for (const f of fed) {
    if (last.chunk >= f.chunks) {
      const name = f.node.title || f.node.type;
      return `prompt ${last.prompt} starts at chunk ${last.chunk}, but ${name} makes chunks 0-${f.chunks - 1}: ` +
        `raise its num_chunks or start the prompt earlier`;
    }
  }
  return "";
}

export function drawTimeline(node) {
  const view = node.causalwanTimeline;
  if (!view) return;
  const entries = timelineEntries(node);
  const fed = fedNodes(node);
  const mode = widgetValue(node, "switch_mode") ?? "cut";
  const signature = JSON.stringify([entries, fed.map((f) => f.chunks), mode]);
  if (signature === view.signature) return; // unchanged since the last draw
  view.signature = signature;
  const span = Math.max(entries[entries.length - 1].chunk + 1, ...fed.map((f) => f.chunks));
  view.bar.replaceChildren(...entries.map((e, i) => {
    const end = Math.min(span, i + 1 < entries.length ? entries[i + 1].chunk : span);
    const seg = el("div", `flex:${Math.max(0.5, end - e.chunk)};background:${slotColor(e.prompt)};` +
      "padding:2px 4px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis");
    seg.textContent = `P${e.prompt} @${e.chunk}`;
    seg.title = `prompt ${e.prompt} from chunk ${e.chunk}` + (i + 1 < entries.length ? ` to ${end - 1}` : " on");
    return seg;
  }));
  const problem = timelineProblem(entries, fed);
  const chunks = fed.length ? ` over ${fed.map((f) => f.chunks).join(" / ")} chunks` : "";
  view.caption.textContent = problem ? `⚠ ${problem}` : `${entries.length} prompt(s)${chunks}, switch: ${mode}`;
  view.caption.title = view.caption.textContent;
  view.caption.style.color = problem ? "#f66" : "#ccc";
  view.box.dataset.problem = problem;
}

export function makeTimeline(node) {
  const box = el("div", "display:flex;flex-direction:column;gap:3px;width:100%;font:11px sans-serif;color:#eee");
  box.className = "causalwan-timeline";
  const bar = el("div", "display:flex;width:100%;border-radius:4px;overflow:hidden;height:18px");
  const caption = el("div", "line-height:13px;height:26px;overflow:hidden");
  box.append(bar, caption);
  addPanel(node, "causalwan_timeline", box, HEIGHT);
  node.causalwanTimeline = { box, bar, caption, signature: "" };
  // Redrawn on every canvas draw (cheap: only when something it shows changed), so edits of this node, its
  // links and the chunk counts of the nodes it feeds all show at once.
  const onDrawBackground = node.onDrawBackground;
  node.onDrawBackground = function () {
    const r = onDrawBackground?.apply(this, arguments);
    drawTimeline(node);
    return r;
  };
  drawTimeline(node);
}
