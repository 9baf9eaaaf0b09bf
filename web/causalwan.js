// CausalWan Stream's frontend extension: a stream player in the sampler and Continue nodes, a prompt timeline in
// CausalWan Prompt Switch, and the text that nodes send (memory plan, notes) shown on them.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { addPanel } from "./dom_panel.js";
import { downstream, widgetValue } from "./graph_links.js";
import { addNodeText, TEXT_NODES } from "./node_text.js";
import { promptLabel, SWITCH_NODE } from "./prompt_labels.js";
import { makeTimeline, STREAM_NODES } from "./prompt_timeline.js";
import { listen } from "./stream_events.js";
import { PLAYER_HEIGHT, StreamPlayer } from "./stream_player.js";

// The fps of the video this node's frames end up in (a CreateVideo after the decode), else the event's.
function videoFps(node, fps) {
  const create = downstream(node, 3).find((n) => (n.comfyClass ?? n.type) === "CreateVideo");
  const value = Number(widgetValue(create, "fps"));
  return value > 0 ? value : fps;
}

function makePlayer(node) {
  const player = new StreamPlayer({ labelFor: (slot) => promptLabel(node, slot), fpsFor: (fps) => videoFps(node, fps) });
  addPanel(node, "causalwan_player", player.root, PLAYER_HEIGHT);
  node.causalwanPlayer = player;
}

function findNode(id) {
  return app.graph?.getNodeById?.(Number(id)) ?? app.graph?.getNodeById?.(id) ?? null;
}

app.registerExtension({
  name: "causalwan.stream",
  setup() {
    listen(api, findNode);
  },
  nodeCreated(node) {
    const kind = node.comfyClass;
    if (STREAM_NODES.includes(kind)) makePlayer(node);
    if (kind === SWITCH_NODE) makeTimeline(node);
    if (TEXT_NODES.includes(kind)) {
      addNodeText(node, kind === "CausalWanModelLoader" ? "the memory plan appears here after a run"
        : "the start's size and any adjustment appear here after a run");
    }
  },
});
