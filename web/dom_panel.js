// A fixed-height DOM panel inside a node: the node grows to fit it (min = max height) and the element never
// draws outside its box, so a panel cannot spill over the node below. Never saved with the workflow.
export function addPanel(node, name, element, height) {
  element.style.height = `${height}px`;
  element.style.boxSizing = "border-box";
  element.style.overflow = "hidden";
  const widget = node.addDOMWidget(name, "causalwan", element, {
    serialize: false, // never part of widgets_values or of the API prompt
    hideOnZoom: false,
    getMinHeight: () => height,
    getMaxHeight: () => height,
    getHeight: () => height,
  });
  widget.serialize = false;
  return widget;
}

export function el(tag, css = "", text = "") {
  const e = document.createElement(tag);
  if (css) e.style.cssText = css;
  if (text) e.textContent = text;
  return e;
}
