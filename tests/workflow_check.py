"""Check a UI-format workflow against node definitions (/object_info shape) without running it.

Finds what makes the graph editor or the server refuse a workflow: unknown node types, widget values that do
not fit (count including UI-only extras, type, range, combo choice), links between sockets of different types,
links that point nowhere, required sockets left unconnected. Combos listed in `file_inputs` (model and image
dropdowns, filled from the user's folders) accept any string.
"""
from __future__ import annotations

from workflow_format import FRONTEND_ONLY, combo_options, input_specs, is_widget, widget_slots

CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")


def file_inputs_of(mappings: dict) -> set[tuple[str, str]]:
    """(node type, input name) of our file dropdowns (class attribute FILE_INPUTS)."""
    return {(name, i) for name, cls in mappings.items() for i in getattr(cls, "FILE_INPUTS", ())}


def types_match(out_type: str, in_type) -> bool:
    """ComfyUI's non-strict link rule: comma-separated unions match when they share a type; "*" matches all."""
    if isinstance(in_type, (list, tuple)):  # a combo socket takes a STRING/COMBO link
        in_type = "COMBO,STRING"
    if out_type == "*" or in_type == "*":
        return True
    return bool({t.strip() for t in str(out_type).split(",")} & {t.strip() for t in str(in_type).split(",")})


def _value_problem(name: str, spec: list, value, any_string: bool) -> str | None:
    kind, opts = spec[0], spec[1] or {}
    choices = combo_options(spec)
    if choices is not None:
        if not isinstance(value, str) and not (choices and type(value) is type(choices[0])):
            return f"{name}={value!r} is not a choice"
        if not any_string and value not in choices:
            return f"{name}={value!r} is not one of {choices}"
        return None
    if kind == "INT":
        if type(value) is not int:
            return f"{name}={value!r} is not an integer"
    elif kind == "FLOAT":
        if type(value) not in (int, float):
            return f"{name}={value!r} is not a number"
    elif kind == "STRING":
        return None if isinstance(value, str) else f"{name}={value!r} is not a string"
    elif kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{name}={value!r} is not a boolean"
    if "min" in opts and value < opts["min"]:
        return f"{name}={value} is below the minimum {opts['min']}"
    if "max" in opts and value > opts["max"]:
        return f"{name}={value} is above the maximum {opts['max']}"
    return None


def check_widgets(node: dict, info: dict, file_inputs: set) -> list[str]:
    where = f"node {node.get('id')} ({node['type']})"
    values = node.get("widgets_values", [])
    slots = widget_slots(info)
    need = sum(1 + extra for _, _, extra in slots)
    if not isinstance(values, list) or len(values) != need:
        got = len(values) if isinstance(values, list) else type(values).__name__
        return [f"{where}: {got} widget values, the definition needs {need} "
                f"({', '.join(n for n, _, _ in slots)} + UI extras)"]
    problems, i = [], 0
    for name, spec, extra in slots:
        p = _value_problem(name, spec, values[i], (node["type"], name) in file_inputs)
        if p:
            problems.append(f"{where}: {p}")
        for e in values[i + 1:i + 1 + extra]:
            if spec[0] == "INT" and e not in CONTROL_VALUES:
                problems.append(f"{where}: {name} control_after_generate={e!r} is not one of {CONTROL_VALUES}")
        i += 1 + extra
    return problems


def check_workflow(workflow: dict, node_info: dict, file_inputs: set = frozenset()) -> list[str]:
    """Every problem found, as readable lines; an empty list means the workflow fits the definitions."""
    problems = []
    nodes = {n["id"]: n for n in workflow.get("nodes", [])}
    for node in nodes.values():
        if node["type"] in FRONTEND_ONLY:
            continue
        if node["type"] not in node_info:
            problems.append(f"node {node['id']}: unknown node type {node['type']!r}")
            continue
        problems += check_widgets(node, node_info[node["type"]], file_inputs)
    for link in workflow.get("links", []):
        lid, src, sslot, dst, dslot, ltype = link[:6]
        if src not in nodes or dst not in nodes:
            problems.append(f"link {lid}: joins missing node {src if src not in nodes else dst}")
            continue
        a, b = nodes[src], nodes[dst]
        if a["type"] in node_info:
            outs = node_info[a["type"]]["output"]
            if sslot >= len(outs):
                problems.append(f"link {lid}: {a['type']} has no output {sslot}")
                continue
            if outs[sslot] != ltype:
                problems.append(f"link {lid}: typed {ltype} but {a['type']} output {sslot} is {outs[sslot]}")
        if sslot >= len(a.get("outputs", [])) or lid not in (a["outputs"][sslot].get("links") or []):
            problems.append(f"link {lid}: not listed on output {sslot} of node {src}")
        if dslot >= len(b.get("inputs", [])) or b["inputs"][dslot].get("link") != lid:
            problems.append(f"link {lid}: not listed on input {dslot} of node {dst}")
            continue
        if b["type"] in node_info:
            name = b["inputs"][dslot]["name"]
            specs = dict(input_specs(node_info[b["type"]]))
            if name not in specs:
                problems.append(f"link {lid}: {b['type']} has no input {name!r}")
            elif not types_match(ltype, specs[name][0]):
                problems.append(f"link {lid}: {ltype} into {b['type']}.{name}, which takes {specs[name][0]}")
    for node in nodes.values():
        info = node_info.get(node["type"])
        if info is None:
            continue
        linked = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
        for name, spec in info["input"].get("required", {}).items():
            if not is_widget(list(spec) + [{}]) and name not in linked:
                problems.append(f"node {node['id']} ({node['type']}): required input {name!r} is not connected")
    return problems
