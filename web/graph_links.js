// Walking the graph around a node: where an input comes from, where an output goes.
export function inputIndex(node, name) {
  return node.inputs?.findIndex((i) => i.name === name) ?? -1;
}

export function isConnected(node, name) {
  const slot = inputIndex(node, name);
  if (slot < 0) return false;
  return node.isInputConnected ? node.isInputConnected(slot) : node.inputs[slot].link != null;
}

// The node feeding input `name` of `node`, or null.
export function sourceOf(node, name) {
  const slot = inputIndex(node, name);
  if (slot < 0 || !isConnected(node, name)) return null;
  return node.getInputNode?.(slot) ?? null;
}

// Nodes reached from every output of `node`, breadth first, at most `depth` links away.
export function downstream(node, depth = 3) {
  const seen = new Set([node]);
  let level = [node];
  for (let d = 0; d < depth; d++) {
    const next = [];
    for (const n of level) {
      for (let slot = 0; slot < (n.outputs?.length ?? 0); slot++) {
        for (const m of n.getOutputNodes?.(slot) ?? []) {
          if (!seen.has(m)) {
            seen.add(m);
            next.push(m);
          }
        }
      }
    }
    level = next;
  }
  seen.delete(node);
  return [...seen];
}

export function widgetValue(node, name) {
  return node?.widgets?.find((w) => w.name === name)?.value;
}
