// The stream player inside the sampler and Continue nodes: holds the run's frames (small JPEGs; past a memory
// budget the oldest chunks' frames are released, see frame_store.js), plays them at the video's fps as they
// arrive, with play/pause, a "live" mode that follows the newest chunk, a scrub bar marked with chunk boundaries
// and coloured by the prompt in force (its released part shaded), and the run's end state (done, cancelled,
// failed). Plain DOM: the state is mirrored in data-* attributes of the root element.
import { el } from "./dom_panel.js";
import { FrameStore, frameAtFraction, trackLayout } from "./frame_store.js";
import { slotColor } from "./prompt_labels.js";

export const PLAYER_HEIGHT = 278;
const SCREEN = 196;

export class StreamPlayer {
  constructor({ labelFor = (slot) => `prompt ${slot}`, fpsFor = (fps) => fps, store = new FrameStore() } = {}) {
    this.store = store; // the frames, by frame number of the run
    this.labelFor = labelFor; // slot -> words, asked when a chunk arrives
    this.fpsFor = fpsFor; // the event's fps -> the fps to play at (e.g. the CreateVideo node's)
    this.root = el("div", "display:flex;flex-direction:column;gap:3px;width:100%;font:11px sans-serif;color:#ccc");
    this.root.className = "causalwan-player";
    this.screen = el("div", `position:relative;height:${SCREEN}px;background:#111;border-radius:4px;overflow:hidden`);
    this.img = el("img", "width:100%;height:100%;object-fit:contain;display:none");
    this.img.alt = "stream preview";
    this.badge = el("div", "position:absolute;top:4px;left:4px;padding:1px 6px;border-radius:3px;" +
      "background:rgba(0,0,0,.6);font-weight:bold");
    this.empty = el("div", "position:absolute;inset:0;display:flex;align-items:center;justify-content:center;" +
      "color:#777", "queue the workflow: every frame appears here as it is made");
    this.screen.append(this.img, this.badge, this.empty);
    this.track = el("div", "position:relative;height:14px;background:#2a2a2a;border-radius:3px;cursor:pointer");
    this.segments = el("div", "position:absolute;inset:0");
    this.releasedBox = el("div", "position:absolute;top:0;bottom:0;left:0;width:0;pointer-events:none;" +
      "background:repeating-linear-gradient(135deg,rgba(0,0,0,.75) 0 3px,rgba(60,60,60,.75) 3px 6px)");
    this.head = el("div", "position:absolute;top:-2px;bottom:-2px;width:2px;background:#fff;left:0");
    this.track.append(this.segments, this.releasedBox, this.head);
    const row = el("div", "display:flex;gap:6px;align-items:center;height:22px");
    const button = "background:#333;color:#ddd;border:1px solid #555;border-radius:3px;font:11px sans-serif;" +
      "height:20px;padding:0 8px;cursor:pointer";
    this.playButton = el("button", button, "▶ play");
    this.liveButton = el("button", button, "● live");
    this.counter = el("span", "margin-left:auto;font-variant-numeric:tabular-nums");
    row.append(this.playButton, this.liveButton, this.counter);
    this.caption = el("div", "height:28px;line-height:14px;overflow:hidden;color:#aaa");
    this.root.append(this.screen, this.track, row, this.caption);
    this.playButton.addEventListener("click", () => (this.playing ? this.pause() : this.play()));
    this.liveButton.addEventListener("click", () => this.goLive());
    this.track.addEventListener("pointerdown", (e) => this.scrubFrom(e));
    this.timer = null;
    this.reset(null);
  }

  // A new run: forget the frames of the last one.
  reset(run, { totalFrames = 0, chunks = 0, fps = 16 } = {}) {
    this.run = run;
    this.store.clear();
    this.chunkList = []; // {chunk, first, count, slot, label}
    this.totalFrames = totalFrames;
    this.chunks = chunks;
    this.fps = this.fpsFor(fps) || fps || 16;
    this.frame = -1;
    this.played = 0; // frames shown by playback since the run began
    this.endState = "";
    this.error = "";
    this.live = run != null;
    this.playing = run != null;
    this.lastLabel = undefined;
    this.segments.replaceChildren();
    this.releasedBox.style.width = "0%";
    this.restartTimer();
    this.render();
  }

  // One "causalwan.stream" chunk event.
  addChunk(d) {
    if (d.run !== this.run) this.reset(d.run, { totalFrames: d.total_frames, chunks: d.chunks, fps: d.fps });
    const label = this.labelFor(d.prompt);
    this.lastLabel = label;
    this.chunkList.push({ chunk: d.chunk, first: d.first, count: d.frames.length, slot: d.prompt, label });
    this.store.add(d.first, d.frames);
    this.totalFrames = Math.max(this.totalFrames, this.store.end);
    if (this.frame < 0) this.show(0);
    else if (this.frame < this.store.start) this.show(this.store.start); // its frame was released
    else if (this.live && d.first - this.frame > d.frames.length) this.show(d.first); // over a chunk behind
    this.drawSegments();
    this.render();
  }

  // How the run ended: "done", "cancelled" or "failed".
  end(state, error = "") {
    this.endState = state;
    this.error = error;
    this.render();
  }

  play() {
    if (!this.store.end) return;
    if (this.frame >= this.store.end - 1 && !this.live) this.show(this.store.start);
    this.playing = true;
    this.restartTimer();
    this.render();
  }

  pause() {
    this.playing = false;
    this.live = false;
    this.restartTimer();
    this.render();
  }

  goLive() {
    this.live = true;
    this.playing = true;
    const newest = this.chunkList[this.chunkList.length - 1];
    if (newest) this.show(newest.first);
    this.restartTimer();
    this.render();
  }

  seek(frame) {
    this.live = false;
    this.show(this.store.clamp(frame));
    this.render();
  }

  scrubFrom(event) {
    const move = (e) => {
      const box = this.track.getBoundingClientRect();
      const x = Math.max(0, Math.min(1, (e.clientX - box.left) / Math.max(1, box.width)));
      this.live = false;
      this.show(frameAtFraction(x, this.totalFrames, this.store));
      this.render();
    };
    move(event);
    const up = () => {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
    };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }

  // One playback step: the next frame, never past the newest one.
  tick() {
    if (!this.playing || !this.store.end) return;
    if (this.frame + 1 < this.store.end && this.store.get(this.frame + 1)) {
      this.show(this.frame + 1);
      this.played += 1;
    } else if (!this.live) {
      this.playing = false; // the end of what has arrived: stop there
    }
    this.render();
  }

  restartTimer() {
    clearInterval(this.timer);
    this.timer = this.playing ? setInterval(() => this.tick(), 1000 / this.fps) : null;
  }

  show(frame) {
    this.frame = frame;
    const src = this.store.get(frame);
    if (src) {
      this.img.src = src;
      this.img.style.display = "block";
    }
  }

  chunkAt(frame) {
    return this.chunkList.find((c) => frame >= c.first && frame < c.first + c.count);
  }

  drawSegments() {
    const layout = trackLayout(this.chunkList, this.totalFrames, this.store.start);
    this.segments.replaceChildren(...layout.chunks.map(({ chunk: c, left, width }) => {
      const seg = el("div", `position:absolute;top:0;bottom:0;left:${left}%;` +
        `width:${width}%;background:${slotColor(c.slot)};border-left:1px solid #111`);
      seg.title = `chunk ${c.chunk}/${this.chunks}: ${c.label}`;
      return seg;
    }));
    this.releasedBox.style.width = `${layout.released.width}%`;
    this.releasedBox.title = this.store.start ? `frames 1-${this.store.start} released to bound memory` : "";
  }

  render() {
    const n = this.store.received;
    const mode = this.live ? "live" : this.playing ? "playing" : "paused";
    const r = this.root.dataset;
    Object.assign(r, { run: this.run ?? "", frames: String(n), frame: String(this.frame), total: String(this.totalFrames),
      chunks: String(this.chunkList.length), held: String(this.store.held), released: String(this.store.start),
      played: String(this.played), mode, end: this.endState, fps: String(this.fps) });
    this.empty.style.display = n ? "none" : "flex";
    const last = this.chunkList[this.chunkList.length - 1];
    const ended = { done: "done", cancelled: `cancelled at chunk ${last?.chunk ?? 0}/${this.chunks}`,
      failed: "failed" }[this.endState];
    this.badge.textContent = ended ?? (this.run ? (this.live ? "● live" : mode) : "");
    this.badge.style.color = { cancelled: "#f0b040", failed: "#f05050", done: "#8c8" }[this.endState] ?? "#f55";
    this.badge.style.display = this.badge.textContent ? "block" : "none";
    this.playButton.textContent = this.playing ? "❚❚ pause" : "▶ play";
    this.liveButton.style.borderColor = this.live ? "#f55" : "#555";
    this.counter.textContent = n ? `frame ${this.frame + 1}/${this.totalFrames} · ${this.fps} fps` : "";
    this.head.style.left = `${(100 * Math.max(0, this.frame)) / Math.max(1, this.totalFrames)}%`;
    const here = this.chunkAt(this.frame);
    const state = this.endState === "failed" ? `failed: ${this.error}` : "";
    this.caption.textContent = state || (here ? `chunk ${here.chunk}/${this.chunks} · ${here.label}` : "");
    this.caption.title = this.caption.textContent;
  }
}
