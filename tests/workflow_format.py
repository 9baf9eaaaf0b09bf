"""Workflow files: the graph editor's UI format -> the API format that POST /prompt takes.

UI format (what users save and share): {"nodes": [{"id", "type", "mode", "inputs": [{"name", "type", "link",
"widget"?}], "outputs", "widgets_values": [...]}], "links": [[id, from_node, from_slot, to_node, to_slot, type]]}.
Widget values are positional and include UI-only extras: "control_after_generate" after a seed-like INT and
the "upload" button value after an image/video upload combo.

API format: {"<id>": {"class_type": type, "inputs": {name: value | [from_id, from_slot]}, "_meta": {"title"}}}.

Node definitions come in the shape of ComfyUI's GET /object_info ({type: {"input": {"required", "optional"},
"output": [...]}}): build them for our classes with `object_info`, take core ones from tests/core_nodes.py, or
pass a live server's /object_info.
"""
from __future__ import annotations

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
SEED_NAMES = ("seed", "noise_seed")
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload", "3d_upload")
FRONTEND_ONLY = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")
MODE_MUTED, MODE_BYPASSED = 2, 4


def object_info(mappings: dict, display_names: dict | None = None) -> dict:
    """/object_info-shaped definitions of classic node classes."""
    out = {}
    for name, cls in mappings.items():
        spec = cls.INPUT_TYPES()
        out[name] = {
            "input": {k: {n: list(v) for n, v in spec.get(k, {}).items()} for k in ("required", "optional", "hidden")
                      if k in spec},
            "output": list(cls.RETURN_TYPES),
            "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
            "name": name,
            "display_name": (display_names or {}).get(name, name),
            "category": getattr(cls, "CATEGORY", ""),
            "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        }
    return out


def input_specs(info: dict) -> list[tuple[str, list]]:
    """(name, [type, options]) of every visible input, required first, in definition order."""
    out = []
    for group in ("required", "optional"):
        for name, spec in info.get("input", {}).get(group, {}).items():
            spec = list(spec)
            if len(spec) == 1:
                spec.append({})
            out.append((name, spec))
    return out


def is_widget(spec: list) -> bool:
    kind, opts = spec[0], spec[1] or {}
    if opts.get("forceInput"):
        return False
    return isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES


def combo_options(spec: list) -> list | None:
    """Choices of a combo input (classic list, or V3 "COMBO" with options), else None."""
    kind, opts = spec[0], spec[1] or {}
    if isinstance(kind, (list, tuple)):
        return list(kind)
    if kind == "COMBO":
        return list(opts.get("options", []))
    return None


def ui_extras(name: str, spec: list) -> int:
    """UI-only values stored right after this widget's value in widgets_values."""
    kind, opts = spec[0], spec[1] or {}
    extras = 0
    if kind == "INT" and (opts.get("control_after_generate") or name in SEED_NAMES):
        extras += 1
    if any(opts.get(flag) for flag in UPLOAD_FLAGS):
        extras += 1
    return extras


def widget_slots(info: dict) -> list[tuple[str, list, int]]:
    """(name, spec, UI-only extra values) of every widget, in widgets_values order."""
    return [(n, s, ui_extras(n, s)) for n, s in input_specs(info) if is_widget(s)]


def widget_values(node: dict, info: dict) -> dict:
    """Widget name -> value of one UI node; raises ValueError when the count does not fit the definition."""
    values = node.get("widgets_values", [])
    slots = widget_slots(info)
    if isinstance(values, dict):
        return {n: values[n] for n, _, _ in slots if n in values}
    need = sum(1 + extra for _, _, extra in slots)
    if len(values) != need:
        raise ValueError(f"node {node.get('id')} ({node.get('type')}) has {len(values)} widget values, its "
                         f"definition needs {need} ({', '.join(n for n, _, _ in slots)} + UI extras)")
    out, i = {}, 0
    for name, _, extra in slots:
        out[name] = values[i]
        i += 1 + extra
    return out


def _links(workflow: dict) -> dict:
    out = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            out[link["id"]] = (link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                               link.get("type"))
        else:
            out[link[0]] = tuple(link[1:6])
    return out


def _source(link_id, links: dict, nodes: dict, seen=()):
    """(node id, slot) that really feeds `link_id`, following Reroute and bypassed nodes; None if nothing does
    (a muted node, a PrimitiveNode whose value already sits in the target's widgets_values)."""
    if link_id is None or link_id not in links or link_id in seen:
        return None
    origin, slot, _, _, ltype = links[link_id]
    node = nodes.get(origin)
    if node is None or node.get("mode") == MODE_MUTED or node["type"] in ("PrimitiveNode", "Note", "MarkdownNote"):
        return None
    if node["type"] == "Reroute" or node.get("mode") == MODE_BYPASSED:
        ins = node.get("inputs", [])
        if node["type"] != "Reroute":  # a bypassed node passes on the first input of the output's type
            ins = [i for i in ins if i.get("type") == ltype] or []
        for inp in ins[:1]:
            return _source(inp.get("link"), links, nodes, seen + (link_id,))
        return None
    return origin, slot


def ui_to_api(workflow: dict, node_info: dict) -> dict:
    """The API-format prompt of a UI-format workflow. node_info: /object_info-shaped definitions of every
    node type used (frontend-only nodes such as Note, Reroute and PrimitiveNode need none)."""
    nodes = {n["id"]: n for n in workflow.get("nodes", [])}
    links = _links(workflow)
    prompt = {}
    for nid, node in nodes.items():
        kind = node["type"]
        if kind in FRONTEND_ONLY or node.get("mode") in (MODE_MUTED, MODE_BYPASSED):
            continue
        if kind not in node_info:
            raise ValueError(f"node {nid}: unknown node type {kind!r}")
        info = node_info[kind]
        inputs = widget_values(node, info)
        names = {n for n, _ in input_specs(info)}
        for inp in node.get("inputs", []):
            src = _source(inp.get("link"), links, nodes)
            if src is not None and inp["name"] in names:
                inputs[inp["name"]] = [str(src[0]), int(src[1])]
        title = node.get("title") or info.get("display_name") or kind
        prompt[str(nid)] = {"inputs": inputs, "class_type": kind, "_meta": {"title": title}}
    return prompt
