// Routes the pack's "causalwan.stream" events and ComfyUI's own end-of-run events to the stream players.
export const STREAM_EVENT = "causalwan.stream";

export function listen(api, findNode) {
  const playerOf = (id) => (id == null ? null : findNode(id)?.causalwanPlayer ?? null);
  api.addEventListener(STREAM_EVENT, ({ detail }) => {
    const player = playerOf(detail.node);
    if (!player) return;
    if (detail.kind === "chunk") player.addChunk(detail);
    else if (detail.kind === "end" && detail.run === player.run) player.end(detail.state, detail.error);
    findNode(detail.node)?.setDirtyCanvas?.(true, false);
  });
  // A Cancel or an error that the node itself could not report (e.g. before its first chunk).
  api.addEventListener("execution_interrupted", ({ detail }) => {
    const player = playerOf(detail?.node_id);
    if (player && !player.endState) player.end("cancelled");
  });
  api.addEventListener("execution_error", ({ detail }) => {
    const player = playerOf(detail?.node_id);
    if (player && player.endState !== "failed") player.end("failed", detail.exception_message ?? "");
  });
}
