// Text a node sends with its result (the "text" of ComfyUI's executed message: the model loader's memory
// plan, the start node's note), shown read-only on the node itself: no wiring needed.
import { addPanel, el } from "./dom_panel.js";

export const TEXT_NODES = ["CausalWanModelLoader", "CausalWanImageConditioner"];
const HEIGHT = 64;

export function addNodeText(node, placeholder) {
  const box = el("div", "width:100%;padding:4px 6px;font:11px sans-serif;line-height:14px;color:#bbb;" +
    "background:#1b1b1b;border-radius:4px;white-space:pre-wrap;overflow-y:auto;user-select:text", placeholder);
  box.className = "causalwan-node-text";
  addPanel(node, "causalwan_text", box, HEIGHT);
  box.style.overflowY = "auto"; // long plans scroll inside the panel
  const onExecuted = node.onExecuted;
  node.onExecuted = function (message) {
    const r = onExecuted?.apply(this, arguments);
    const text = message?.text;
    if (text?.length) {
      box.textContent = Array.isArray(text) ? text.join("\n") : String(text);
      box.style.color = "#ddd";
    }
    return r;
  };
  node.causalwanText = box;
  return box;
}
