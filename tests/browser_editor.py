"""ComfyUI's graph editor in a real headless Chromium, driven by Playwright, for tests/test_browser_editor.py.

    CAUSALWAN_CHROMIUM   the browser (default /usr/bin/chromium, Debian's package `chromium`); Playwright's own
                         browser download is not used
    COMFYUI_FRONTEND_ROOT  a second frontend to check as well (the `static` folder of a newer
                         comfyui-frontend-package wheel), served with ComfyUI's --front-end-root

`Editor` wraps one page: it opens the editor, loads workflows, reads node boxes and the pack's panels, and
queues API prompts under the page's own client id, so the page receives every event of the run over its
websocket exactly as after pressing Run.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import comfy_server

CHROMIUM = os.environ.get("CAUSALWAN_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1600, "height": 1000}


def skip_reason() -> str | None:
    reason = comfy_server.skip_reason()
    if reason:
        return reason
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing: pip install -e '.[test]'"
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"no browser at {CHROMIUM}: apt-get install chromium (or set CAUSALWAN_CHROMIUM)"
    return None


def frontends() -> list[str | None]:
    """None (the frontend the server ships) and the one in $COMFYUI_FRONTEND_ROOT, if set."""
    extra = os.environ.get("COMFYUI_FRONTEND_ROOT")
    return [None] + ([str(Path(extra).resolve())] if extra else [])


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)


class Editor:
    def __init__(self, page, server: comfy_server.ComfyServer):
        self.page, self.server = page, server
        self.console: list[str] = []
        self.responses: list[tuple[str, int]] = []  # (URL, status) of every response the page got
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("response", lambda r: self.responses.append((r.url, r.status)))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def open(self, timeout_ms: int = 90000) -> "Editor":
        self.server.post("/settings/Comfy.TutorialCompleted", True)  # no "get started" dialog over the canvas
        self.page.goto(self.server.url)
        self.page.wait_for_function("window.app?.graph && window.app.canvas && window.app.api?.clientId",
                                    timeout=timeout_ms)
        return self

    @property
    def version(self) -> str:
        return self.page.evaluate("window.__COMFYUI_FRONTEND_VERSION__ ?? ''")

    @property
    def client_id(self) -> str:
        return self.page.evaluate("window.app.api.clientId")

    def load(self, workflow: dict) -> None:
        self.page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
        self.redraw()

    def redraw(self, wait_ms: int = 400) -> None:
        """Two canvas draws (nodes grow to fit their widgets on a draw), then a moment for DOM widgets."""
        for _ in range(2):
            self.page.evaluate("window.app.canvas.setDirty(true, true); window.app.canvas.draw(true, true)")
            self.page.wait_for_timeout(wait_ms // 2)

    def fit(self, ids: list[int] | None = None, margin: int = 30) -> None:
        """Zoom and pan so that the nodes `ids` (default: all) fill the canvas."""
        self.page.evaluate("""([ids, m]) => {
            const c = window.app.canvas, g = window.app.graph;
            const nodes = ids ? ids.map((i) => g.getNodeById(i)) : g._nodes;
            let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
            for (const n of nodes) { const b = n.getBounding();
              x0 = Math.min(x0, b[0]); y0 = Math.min(y0, b[1]); x1 = Math.max(x1, b[0] + b[2]); y1 = Math.max(y1, b[1] + b[3]); }
            const r = c.canvas.getBoundingClientRect();
            const s = Math.min((r.width - 2 * m) / (x1 - x0), (r.height - 2 * m) / (y1 - y0), 1.5);
            c.ds.scale = s; c.ds.offset = [m / s - x0, m / s - y0]; c.setDirty(true, true); }""", [ids, margin])
        self.redraw()

    def nodes(self) -> list[dict]:
        """Every node: id, type, title and its box in graph units (title bar included)."""
        return self.page.evaluate("""() => window.app.graph._nodes.map((n) => ({ id: n.id, type: n.type,
            title: n.title, box: Array.from(n.getBounding()) }))""")

    def panels(self) -> list[dict]:
        """The pack's DOM panels: node id, the element's screen box and its node's screen box."""
        return self.page.evaluate("""() => {
            const c = window.app.canvas, r = c.canvas.getBoundingClientRect(), s = c.ds.scale, o = c.ds.offset;
            const out = [];
            for (const n of window.app.graph._nodes) for (const w of n.widgets ?? []) {
              if (w.type !== "causalwan" || !w.element) continue;
              const e = w.element.getBoundingClientRect(), b = n.getBounding();
              out.push({ node: n.id, name: w.name, visible: e.width > 0 && e.height > 0,
                panel: [e.left, e.top, e.width, e.height],
                owner: [r.left + (b[0] + o[0]) * s, r.top + (b[1] + o[1]) * s, b[2] * s, b[3] * s] });
            }
            return out; }""")

    def player(self, node_id) -> dict:
        """The stream player's data-* state and what it shows (badge, caption, counter)."""
        return self.page.evaluate("""(id) => {
            const p = window.app.graph.getNodeById(id)?.causalwanPlayer;
            if (!p) return null;
            return { ...p.root.dataset, badge: p.badge.textContent, caption: p.caption.textContent,
              counter: p.counter.textContent, src: p.img.getAttribute("src") ?? "",
              segments: p.segments.children.length }; }""", node_id)

    def wait_player(self, node_id, predicate: str, timeout: float = 120.0) -> dict:
        """Wait until `predicate` (a JS expression over `d`, the player's dataset) holds; returns the state."""
        self.page.wait_for_function(f"""(id) => {{ const d = window.app.graph.getNodeById(id)?.causalwanPlayer?.root.dataset;
            return d && ({predicate}); }}""", arg=node_id, timeout=timeout * 1000, polling=100)
        return self.player(node_id)

    def queue(self, prompt: dict) -> str:
        """POST /prompt under the page's client id (what Run does); returns the prompt id."""
        answer = self.server.post("/prompt", {"prompt": prompt, "client_id": self.client_id})
        assert answer and "prompt_id" in answer, f"ComfyUI refused the prompt: {json.dumps(answer)[:3000]}"
        return answer["prompt_id"]

    def cancel(self) -> None:
        """What the Cancel button does: the frontend's api.interrupt()."""
        self.page.evaluate("window.app.api.interrupt()")

    def wait_idle(self, timeout: float = 120.0) -> None:
        assert self.server.wait_idle(timeout), "the queue did not empty"

    def set_widget(self, node_id: int, name: str, value) -> None:
        self.page.evaluate("""([id, name, value]) => { const n = window.app.graph.getNodeById(id);
            const w = n.widgets.find((w) => w.name === name); w.value = value; w.callback?.(value);
            window.app.canvas.setDirty(true, true); }""", [node_id, name, value])
        self.redraw()

    def template_cards(self, pack: str, timeout: float = 30.0) -> list[dict]:
        """Open the template browser on the pack's category; every card's name and the natural sizes of the
        images it shows (the frontend fetches a thumbnail and shows it from a blob: URL)."""
        self.page.evaluate("window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        self.page.get_by_text(pack, exact=True).first.click(timeout=timeout * 1000)
        self.page.wait_for_selector('[data-testid^="template-workflow-"]', timeout=timeout * 1000)
        deadline = time.monotonic() + timeout
        while True:  # thumbnails load lazily
            cards = self.page.evaluate("""() => [...document.querySelectorAll('[data-testid^="template-workflow-"]')]
                .map((c) => ({ name: c.dataset.testid.slice("template-workflow-".length),
                  thumbs: [...c.querySelectorAll("img")].map((i) => [i.naturalWidth, i.naturalHeight]) }))""")
            if all(c["thumbs"] and c["thumbs"][0][0] for c in cards) or time.monotonic() > deadline:
                return cards
            self.page.wait_for_timeout(250)

    def close_dialogs(self) -> None:
        self.page.keyboard.press("Escape")
        self.page.wait_for_timeout(300)


def overlaps(a: list[float], b: list[float]) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def inside(inner: list[float], outer: list[float], slack: float = 1.0) -> bool:
    ix, iy, iw, ih = inner
    ox, oy, ow, oh = outer
    return ix >= ox - slack and iy >= oy - slack and ix + iw <= ox + ow + slack and iy + ih <= oy + oh + slack
