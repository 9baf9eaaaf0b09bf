"""The shipped workflows fit the node definitions (ours + a table of ComfyUI 0.3.64 core nodes), and the UI ->
API converter turns each into a prompt the server would take."""
import copy
import json
from pathlib import Path

import pytest
from PIL import Image

import causalwan
from core_nodes import COMFYUI_VERSION, CORE_NODES, FILE_LISTS
from workflow_check import check_workflow, file_inputs_of
from workflow_format import object_info, ui_to_api, widget_slots
from shipped_workflows import FOLDER, I2V_FILES, I2V_FOLDER, PROMPT_SWITCH, T2V_DENSE, TINY_WORLD, all_workflows

ROOT = Path(causalwan.__file__).parent
WORKFLOWS = all_workflows()
INFO = {**CORE_NODES, **object_info(causalwan.NODE_CLASS_MAPPINGS, causalwan.NODE_DISPLAY_NAME_MAPPINGS)}
FILES = set(FILE_LISTS) | file_inputs_of(causalwan.NODE_CLASS_MAPPINGS)


def load(path):
    return json.loads(Path(path).read_text())


def by_type(wf, kind):
    return [n for n in wf["nodes"] if n["type"] == kind]


def test_each_workflow_once_in_the_conventional_folder_with_a_thumbnail():
    assert [p.name for p in WORKFLOWS] == sorted([I2V_FILES, I2V_FOLDER, PROMPT_SWITCH, T2V_DENSE, TINY_WORLD])
    for other in ("workflows", "workflow", "examples", "example"):  # ComfyUI would list them all again
        assert not (ROOT / other).exists(), f"{other}/ would show every workflow twice in the template browser"
    for p in WORKFLOWS:
        thumb = p.with_suffix(".jpg")
        assert thumb.is_file(), f"{p.name} has no thumbnail {thumb.name}"
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and im.width >= 256 and im.height >= 192
    assert COMFYUI_VERSION == "0.3.64"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_fits_the_node_definitions(path):
    wf = load(path)
    assert check_workflow(wf, INFO, FILES) == []
    types = {n["type"] for n in wf["nodes"]}
    text = {"CausalWanTextEncode"} if path.name == TINY_WORLD else {"CLIPLoader", "CLIPTextEncode"}
    assert {"CausalWanModelLoader", "CausalWanChunkSampler", "CausalWanDecode", "CreateVideo", "SaveVideo"} | text \
        <= types
    assert all(t in causalwan.NODE_CLASS_MAPPINGS or t in CORE_NODES or t == "MarkdownNote" for t in types)
    for clip in by_type(wf, "CLIPLoader"):
        assert clip["widgets_values"][1] == "wan"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_ui_to_api_conversion(path):
    wf = load(path)
    api = ui_to_api(wf, INFO)
    real = [n for n in wf["nodes"] if n["type"] != "MarkdownNote"]
    assert sorted(api) == sorted(str(n["id"]) for n in real)
    for node in real:
        entry = api[str(node["id"])]
        assert entry["class_type"] == node["type"]
        widgets = [n for n, _, _ in widget_slots(INFO[node["type"]])]
        sockets = [i["name"] for i in node["inputs"] if i["link"] is not None]
        assert set(entry["inputs"]) == set(widgets) | set(sockets)
        for name in sockets:
            src, slot = entry["inputs"][name]
            assert isinstance(src, str) and src in api and isinstance(slot, int)
    sampler = next(v for v in api.values() if v["class_type"] == "CausalWanChunkSampler")
    assert isinstance(sampler["inputs"]["seed"], int)  # "fixed" (control_after_generate) is UI-only
    assert sampler["inputs"]["steps"] == "" and sampler["inputs"]["num_chunks"] >= 7
    for load_image in (v for v in api.values() if v["class_type"] == "LoadImage"):
        want = "causalwan_tinyworld.png" if path.name == TINY_WORLD else "example.png"
        assert load_image["inputs"] == {"image": want}  # the "upload" button value is UI-only
    json.dumps(api)


def test_prompt_switch_workflow_wiring():
    wf = load(FOLDER / PROMPT_SWITCH)
    api = ui_to_api(wf, INFO)
    (sw,) = [v for v in api.values() if v["class_type"] == "CausalWanPromptSwitch"]
    assert sw["inputs"]["switch_mode"] == "recache"
    assert (sw["inputs"]["start_chunk_2"], sw["inputs"]["start_chunk_3"]) == (3, 5)
    assert "conditioning_4" not in sw["inputs"]
    (cont,) = [v for v in api.values() if v["class_type"] == "CausalWanContinue"]
    assert api[cont["inputs"]["stream"][0]]["class_type"] == "CausalWanChunkSampler"
    assert cont["inputs"]["stream"][1] == 1
    assert api[cont["inputs"]["prompts"][0]]["class_type"] == "CLIPTextEncode"
    (dec,) = [v for v in api.values() if v["class_type"] == "CausalWanDecode"]
    assert dec["inputs"]["latent"][0] == [k for k, v in api.items() if v is cont][0]


def test_dense_workflow_is_text_to_video_of_21_latent_frames():
    wf = load(FOLDER / T2V_DENSE)
    api = ui_to_api(wf, INFO)
    (loader,) = [v for v in api.values() if v["class_type"] == "CausalWanModelLoader"]
    assert loader["inputs"]["high_noise_model"] == "none" and loader["inputs"]["low_noise_model"] != "none"
    (start,) = [v for v in api.values() if v["class_type"] == "CausalWanImageConditioner"]
    assert "image" not in start["inputs"]
    (s,) = [v for v in api.values() if v["class_type"] == "CausalWanChunkSampler"]
    assert (s["inputs"]["num_chunks"], s["inputs"]["frames_per_chunk"], s["inputs"]["window_frames"]) == (7, 3, 0)
    assert s["inputs"]["steps"] == ""  # the model's own 4 steps


# ------------------------------------------------------------------------ the checker and converter can fail
def sampler_of(wf):
    return by_type(wf, "CausalWanChunkSampler")[0]


@pytest.fixture
def wf():
    return load(FOLDER / I2V_FILES)


def test_checker_finds_a_missing_seed_control_value(wf):
    sampler_of(wf)["widgets_values"].remove("fixed")
    (p,) = check_workflow(wf, INFO, FILES)
    assert "8 widget values, the definition needs 9" in p


def test_checker_finds_values_out_of_range_and_of_wrong_type(wf):
    v = sampler_of(wf)["widgets_values"]
    v[0] = 0  # num_chunks min 1
    v[2] = "sometimes"  # control_after_generate
    v[5] = 3.5  # frames_per_chunk INT
    problems = check_workflow(wf, INFO, FILES)
    assert any("num_chunks=0 is below the minimum 1" in p for p in problems)
    assert any("control_after_generate='sometimes'" in p for p in problems)
    assert any("frames_per_chunk=3.5 is not an integer" in p for p in problems)


def test_checker_finds_a_bad_combo_but_accepts_any_model_file(wf):
    loader = by_type(wf, "CausalWanModelLoader")[0]
    loader["widgets_values"][0] = "my_own_expert.safetensors"  # file dropdown: any file name
    loader["widgets_values"][5] = "everywhere"  # offload
    (p,) = check_workflow(wf, INFO, FILES)
    assert "offload='everywhere' is not one of" in p


def test_checker_finds_a_link_of_the_wrong_type(wf):
    s = sampler_of(wf)
    link_id = s["inputs"][[i["name"] for i in s["inputs"]].index("start")]["link"]
    link = next(lk for lk in wf["links"] if lk[0] == link_id)
    vae = by_type(wf, "CausalWanVAELoader")[0]
    vae["outputs"][0]["links"].append(link_id)
    start_node = next(n for n in wf["nodes"] if n["id"] == link[1])
    start_node["outputs"][link[2]]["links"].remove(link_id)
    link[1], link[2], link[5] = vae["id"], 0, "CAUSALWAN_VAE"
    (p,) = check_workflow(wf, INFO, FILES)
    assert "CAUSALWAN_VAE into CausalWanChunkSampler.start, which takes CAUSALWAN_START" in p


def test_checker_finds_an_unconnected_required_socket_and_unknown_type(wf):
    s = sampler_of(wf)
    for inp in s["inputs"]:
        if inp["name"] == "model":
            wf["links"] = [lk for lk in wf["links"] if lk[0] != inp["link"]]
            for n in wf["nodes"]:
                for o in n["outputs"]:
                    if o.get("links") and inp["link"] in o["links"]:
                        o["links"].remove(inp["link"])
            inp["link"] = None
    by_type(wf, "CreateVideo")[0]["type"] = "CreateVideoX"
    problems = check_workflow(wf, INFO, FILES)
    assert any("required input 'model' is not connected" in p for p in problems)
    assert any("unknown node type 'CreateVideoX'" in p for p in problems)
    with pytest.raises(ValueError, match="unknown node type 'CreateVideoX'"):
        ui_to_api(wf, INFO)


def test_union_sockets_take_either_type(wf):
    # the sampler's prompts socket is "CAUSALWAN_PROMPTS,CONDITIONING": a CONDITIONING link is valid
    s = sampler_of(wf)
    link_id = next(i["link"] for i in s["inputs"] if i["name"] == "prompts")
    assert next(lk for lk in wf["links"] if lk[0] == link_id)[5] == "CONDITIONING"
    assert check_workflow(wf, INFO, FILES) == []


def test_converter_follows_reroutes_and_bypassed_nodes_and_drops_muted_ones(wf):
    wf = copy.deepcopy(wf)
    dec = by_type(wf, "CausalWanDecode")[0]
    cv = by_type(wf, "CreateVideo")[0]
    img_link = next(i["link"] for i in cv["inputs"] if i["name"] == "images")
    # reroute the decoder -> CreateVideo link
    rr = {"id": 99, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 100}],
          "outputs": [{"name": "", "type": "IMAGE", "links": [img_link]}], "widgets_values": []}
    wf["nodes"].append(rr)
    link = next(lk for lk in wf["links"] if lk[0] == img_link)
    link[1], link[2] = 99, 0
    wf["links"].append([100, dec["id"], 0, 99, 0, "IMAGE"])
    api = ui_to_api(wf, INFO)
    assert api[str(cv["id"])]["inputs"]["images"] == [str(dec["id"]), 0]
    assert "99" not in api
    # bypass the decoder: CreateVideo would get the decoder's first input of type IMAGE -- there is none
    dec["mode"] = 4
    api = ui_to_api(wf, INFO)
    assert str(dec["id"]) not in api and "images" not in api[str(cv["id"])]["inputs"]
    # mute the text encoder: the sampler loses its prompts link
    enc = by_type(wf, "CLIPTextEncode")[0]
    enc["mode"] = 2
    api = ui_to_api(wf, INFO)
    assert str(enc["id"]) not in api and "prompts" not in api[str(sampler_of(wf)["id"])]["inputs"]
