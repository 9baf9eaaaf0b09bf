// The stream player's frames, held within a memory budget: a window or sink stream can run for thousands of
// chunks, so once the frames held pass FRAME_BYTE_BUDGET the oldest chunks' frames are released (whole chunks,
// never the newest one). Frame numbers stay those of the run: frames before `start` are gone, the rest are held.
// Also the scrub bar's layout (chunk boxes, the released part) and its fraction -> frame mapping. No DOM here,
// so Node can run it (tests/test_nodes_web.py).

export const FRAME_BYTE_BUDGET = 64 * 1024 * 1024; // ~3000-6000 frames of 10-25 KB JPEG data URLs

// A frame's cost: a data URL string is held one byte per character; a blob: URL's object URL is revoked.
const sizeOf = (src) => (typeof src === "string" ? src.length : 0);
const releaseUrl = (src) => {
  if (typeof src === "string" && src.startsWith("blob:")) URL.revokeObjectURL(src);
};

export class FrameStore {
  constructor({ budget = FRAME_BYTE_BUDGET, release = releaseUrl } = {}) {
    this.budget = budget;
    this.release = release; // called once for every frame let go
    this.groups = []; // {first, frames, bytes}, in arrival order, one per chunk
    this.bytes = 0;
    this.start = 0; // the first frame still held; frames [0, start) were released
    this.end = 0; // one past the highest frame received
    this.received = 0; // frames received this run
  }

  // Let go of every frame (a new run).
  clear() {
    this.groups.forEach((g) => g.frames.forEach((src) => this.release(src)));
    this.groups = [];
    this.bytes = 0;
    this.start = 0;
    this.end = 0;
    this.received = 0;
  }

  // One chunk's frames, numbered from `first`; releases the oldest chunks while the budget is exceeded.
  add(first, frames) {
    const bytes = frames.reduce((sum, src) => sum + sizeOf(src), 0);
    this.groups.push({ first, frames: frames.slice(), bytes });
    this.bytes += bytes;
    this.received += frames.length;
    this.end = Math.max(this.end, first + frames.length);
    while (this.bytes > this.budget && this.groups.length > 1) {
      const old = this.groups.shift();
      old.frames.forEach((src) => this.release(src));
      this.bytes -= old.bytes;
      this.start = Math.max(this.start, old.first + old.frames.length);
    }
  }

  get held() {
    return this.groups.reduce((sum, g) => sum + g.frames.length, 0);
  }

  get released() {
    return this.received - this.held;
  }

  // The frame's src, or undefined when it was released or has not arrived.
  get(frame) {
    if (frame < this.start) return undefined;
    for (let i = this.groups.length - 1; i >= 0; i--) {
      const g = this.groups[i];
      if (frame >= g.first && frame < g.first + g.frames.length) return g.frames[frame - g.first];
    }
    return undefined;
  }

  // The nearest frame that can be shown: inside [start, end - 1].
  clamp(frame) {
    return Math.max(this.start, Math.min(this.end - 1, frame));
  }
}

// The scrub bar over `total` frames, in percent of its width: one box per chunk (all chunks of the run, so
// boundaries and prompt colours stay right) and the released part [0, start) drawn over them.
export function trackLayout(chunkList, total, start) {
  const pct = (n) => (100 * n) / Math.max(1, total);
  return {
    chunks: chunkList.map((c) => ({ chunk: c, left: pct(c.first), width: pct(c.count) })),
    released: { left: 0, width: pct(start) },
  };
}

// A click at `x` (0..1 of the bar's width) -> the frame to show: the frame under it, or the oldest frame still
// held when it lands on the released part.
export function frameAtFraction(x, total, store) {
  return store.clamp(Math.floor(Math.max(0, Math.min(1, x)) * Math.max(1, total)));
}
