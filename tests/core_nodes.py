"""The ComfyUI core nodes our example workflows use, as /object_info entries (read from ComfyUI 0.3.64: nodes.py
and comfy_extras/nodes_video.py, Oct 2025). File lists are empty: any file name is accepted for them."""

COMFYUI_VERSION = "0.3.64"

CLIP_TYPES = ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image"]

FILE_LISTS = {("LoadImage", "image"), ("CLIPLoader", "clip_name")}  # combos filled from the user's folders

CORE_NODES = {
    "LoadImage": {
        "input": {"required": {"image": [[], {"image_upload": True}]}},
        "output": ["IMAGE", "MASK"], "output_name": ["IMAGE", "MASK"], "display_name": "Load Image",
    },
    "CLIPLoader": {
        "input": {"required": {"clip_name": [[]], "type": [CLIP_TYPES]},
                  "optional": {"device": [["default", "cpu"], {"advanced": True}]}},
        "output": ["CLIP"], "output_name": ["CLIP"], "display_name": "Load CLIP",
    },
    "CLIPTextEncode": {
        "input": {"required": {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}],
                               "clip": ["CLIP"]}},
        "output": ["CONDITIONING"], "output_name": ["CONDITIONING"], "display_name": "CLIP Text Encode (Prompt)",
    },
    "CreateVideo": {
        "input": {"required": {"images": ["IMAGE"],
                               "fps": ["FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0}]},
                  "optional": {"audio": ["AUDIO"]}},
        "output": ["VIDEO"], "output_name": ["VIDEO"], "display_name": "Create Video",
    },
    "SaveVideo": {
        "input": {"required": {"video": ["VIDEO"],
                               "filename_prefix": ["STRING", {"default": "video/ComfyUI"}],
                               "format": ["COMBO", {"options": ["auto", "mp4"], "default": "auto"}],
                               "codec": ["COMBO", {"options": ["auto", "h264"], "default": "auto"}]}},
        "output": [], "output_name": [], "display_name": "Save Video", "output_node": True,
    },
}
