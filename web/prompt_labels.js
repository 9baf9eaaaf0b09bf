// Which prompt is in force, in the user's words: the stream events name a prompt slot (k = conditioning_k of
// a CausalWan Prompt Switch, 0 = a CONDITIONING connected straight to the node, -1 = the prompt of the stream
// a Continue goes on from); this finds the node that made that CONDITIONING and names it by its title and text.
import { sourceOf, widgetValue } from "./graph_links.js";

export const SWITCH_NODE = "CausalWanPromptSwitch";
export const UPSTREAM = -1;
const COLORS = ["#3d6fb6", "#b6623d", "#4f9a58", "#8a4fb0"];

export function slotColor(slot) {
  return slot > 0 ? COLORS[(slot - 1) % COLORS.length] : slot === 0 ? COLORS[0] : "#666";
}

function shorten(text, n) {
  const t = String(text).replace(/\s+/g, " ").trim();
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}

// "Prompt 4: Evening falls over the forest…" for a CLIPTextEncode titled "Prompt 4".
export function describeSource(source, fallback) {
  if (!source) return fallback;
  const text = widgetValue(source, "text");
  const typeTitle = source.constructor?.title ?? source.type;
  const titled = source.title && source.title !== typeTitle && source.title !== source.type;
  const name = titled ? source.title : fallback;
  return typeof text === "string" && text.trim() ? `${name}: ${shorten(text, 60)}` : name;
}

export function promptLabel(node, slot) {
  if (slot === UPSTREAM) {
    const upstream = sourceOf(node, "stream");
    return upstream?.causalwanPlayer?.lastLabel ?? "the prompt of the stream it continues";
  }
  const source = sourceOf(node, "prompts");
  if (source?.type === SWITCH_NODE || source?.comfyClass === SWITCH_NODE) {
    return describeSource(sourceOf(source, `conditioning_${slot}`), `prompt ${slot}`);
  }
  return describeSource(source, slot > 0 ? `prompt ${slot}` : "the prompt");
}
