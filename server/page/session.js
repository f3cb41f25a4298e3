// The page's side of the protocol (README, "The protocol"; docs/protocol.md):
// one WebSocket session per opened image. The image is prepared once (empty
// `prompts`), then each prompt is asked for by the image's hash on the same
// session; a newer request supersedes an older one still waiting. Every
// request carries a `client_ref`, and an answer is handed on only with the
// request it answers, and only when it is about this session's image.
// Prompts are asked at the canvas's size (`mask_scale`); an accepted mask is
// asked again at full size by `render`, when nothing else is being asked (a
// render superseded by a click is asked again after it).

const RETRY_MS = 2000;

function bearer(token) {
  return token ? {Authorization: `Bearer ${token}`} : {};
}

// What /health says to this token: "ready", "unready", "token" (it was
// refused: /health then answers only {"healthy": ...}) or "gone".
export async function serverState(token) {
  let response, body;
  try {
    response = await fetch("/health", {headers: bearer(token), cache: "no-store"});
    body = await response.json();
  } catch {
    return {state: "gone"};
  }
  if (!("model_loaded" in body)) return {state: "token", body};
  return {state: response.ok ? "ready" : "unready", body};
}

function socketUrl(token) {
  const url = new URL("/", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (token) url.searchParams.set("token", token);  // browsers cannot set headers on a WebSocket
  return url;
}

// A prompt as the wire wants it: {points?, box?, mask_input?}.
export function wirePrompt(prompt) {
  const wire = {};
  if (prompt.points.length) wire.points = prompt.points.map(({x, y, label}) => ({x, y, label}));
  if (prompt.box) wire.box = {...prompt.box};
  if (prompt.maskFrom) wire.mask_input = {...prompt.maskFrom};
  return wire;
}

let sessions = 0;

export class Session {
  // source: the image_url the server fetches (http, https or data:);
  // sha256: the server's name for it when it was prepared before (it is then asked by hash).
  // handlers: prepared(entry, result), answer(entry, result), rendered(entry, result),
  //           failed(entry, error), progress(entry), connection(state, details), everything(entry, result).
  constructor(source, token, handlers, sha256 = null) {
    this.source = source;
    this.token = token;
    this.handlers = handlers;
    this.sha256 = sha256;    // the server's name for the image, once prepared
    this.prepared = false;
    this.pending = new Map();  // client_ref -> entry, until its result or error
    this.latest = null;        // the newest request: the one the server works on
    this.renders = [];         // the masks ({id, index, candidate?}) to ask for at full size, one at a time, when idle
    this.prefix = `s${++sessions}`;
    this.serial = 0;
    this.ws = null;
    this.closed = false;
    this.retry = null;
    this.connect();
  }

  close() {
    this.closed = true;
    clearTimeout(this.retry);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }

  setToken(token) {
    this.token = token;
    if (!this.ws) {
      clearTimeout(this.retry);
      this.connect();
    }
  }

  connect() {
    if (this.closed) return;
    this.retry = null;
    this.prepared = false;
    for (const entry of this.pending.values()) if (entry.kind === "render") this.renders.push(entry.render);
    this.pending.clear();  // what was asked on a lost connection is never answered (renders are asked again)
    this.handlers.connection("connecting");
    const ws = new WebSocket(socketUrl(this.token));
    let opened = false;
    this.ws = ws;
    ws.onopen = () => {
      opened = true;
      this.handlers.connection("open");
      this.prepare();
    };
    ws.onmessage = (event) => {
      if (ws === this.ws) this.receive(JSON.parse(event.data));
    };
    ws.onclose = (event) => {
      if (ws !== this.ws || this.closed) return;
      this.ws = null;
      this.prepared = false;
      if (opened && event.code === 1000) {
        this.handlers.connection("idle");  // the server closed an idle session; the next request opens one
      } else {
        this.diagnose();
      }
    };
  }

  // Why the connection failed or was lost, said to the person; then try again unless the token is wrong.
  async diagnose() {
    const {state, body} = await serverState(this.token);
    if (this.closed) return;
    this.handlers.connection(state, body);
    if (state !== "token") this.retry = setTimeout(() => this.reconnectWhenBack(), RETRY_MS);
    else this.retry = null;
  }

  async reconnectWhenBack() {
    this.retry = null;
    const {state, body} = await serverState(this.token);
    if (this.closed || this.ws) return;
    if (state === "gone" || state === "token") {
      this.handlers.connection(state, body);
      if (state === "gone") this.retry = setTimeout(() => this.reconnectWhenBack(), RETRY_MS);
      return;
    }
    this.connect();
  }

  // Prepare the image: by hash when the server has named it already, else by URL.
  prepare() {
    const image = this.sha256 ? {image_sha256: this.sha256} : {image_url: this.source};
    this.send({...image, prompts: []}, {kind: "prepare"});
  }

  // Whether `prompt` is asked for, with this multimask setting, and not yet answered.
  asking(prompt, multimask) {
    const latest = this.latest;
    return Boolean(latest && latest.prompt === prompt && latest.multimask === multimask && this.pending.has(latest.ref));
  }

  // Ask for the masks of one prompt; false when the session cannot ask yet
  // (it calls `prepared` once it can).
  // maskScale: the masks' size ÷ the image's (under 1: `mask_scale`, the canvas's size).
  ask(prompt, {multimask, maskScale = 1}) {
    if (!this.ws) {
      if (!this.retry) this.connect();  // after an idle close, or a refused token
      return false;
    }
    if (!this.prepared) return false;
    this.send({
      image_sha256: this.sha256,
      prompts: [wirePrompt(prompt)],
      multimask,
      output: ["rle"],  // polygons, when wanted, are traced at export (polygons.js)
      ...(maskScale < 1 ? {mask_scale: maskScale} : {}),
    }, {kind: "prompt", prompt, multimask});
    return true;
  }

  // Every mask of the image (protocol 1.2's `everything`), with the generator's parameters
  // (RLE only: polygons are traced at export, as for every object).
  everything(parameters) {
    if (!this.ws || !this.prepared) return false;
    this.send({image_sha256: this.sha256, everything: parameters, output: ["rle"]}, {kind: "everything"});
    return true;
  }

  // Ask for an earlier mask ({id, index, candidate?}) again at full size, once nothing else is asked.
  render(ref) {
    this.renders.push(ref);
    if (!this.ws && !this.retry) this.connect();  // after an idle close: asked once prepared again
    else this.renderWhenIdle();
  }

  renderWhenIdle() {
    if (!this.ws || !this.prepared || this.pending.size || !this.renders.length) return;
    const render = this.renders.shift();
    this.send({image_sha256: this.sha256, prompts: [{render}], output: ["rle"]}, {kind: "render", render});
  }

  send(body, entry) {
    const ref = `${this.prefix}-${++this.serial}`;
    Object.assign(entry, {ref, sentAt: performance.now(), phase: "sent", position: null, id: null});
    this.pending.set(ref, entry);
    this.latest = entry;
    this.ws.send(JSON.stringify({...body, keep_open: true, client_ref: ref}));
    this.handlers.progress(entry);
  }

  receive(message) {
    const entry = this.pending.get(message.client_ref);
    if (!entry) return;  // not a request of this session, or one already answered
    if (message.type === "progress") {  // grid points done, of an everything request
      Object.assign(entry, {done: message.done, total: message.total});
      this.handlers.progress(entry);
      return;
    }
    if (message.type === "queued" || message.type === "status") {
      entry.id = message.id;
      entry.phase = message.type === "queued" ? "queued" : message.status;
      if (message.type === "queued") entry.position = message.position;
      this.handlers.progress(entry);
      return;
    }
    this.pending.delete(message.client_ref);
    entry.elapsed = (performance.now() - entry.sentAt) / 1000;
    entry.phase = message.type;
    if (message.type === "result") {
      if (entry.kind === "prepare") {
        this.sha256 = message.image.sha256;
        this.prepared = true;
        this.handlers.prepared(entry, message);
      } else if (message.image.sha256 === this.sha256) {
        if (entry.kind === "render") this.handlers.rendered(entry, message);
        else if (entry.kind === "everything") this.handlers.everything(entry, message);
        else this.handlers.answer(entry, message);
      }
    } else if (message.code === "image_unknown") {
      // The server no longer has the image (restarted, or evicted it): send it again.
      if (entry.kind === "render") this.renders.unshift(entry.render);
      this.sha256 = null;
      this.prepared = false;
      this.prepare();
    } else if (message.code === "superseded") {
      if (entry.kind === "render") this.renders.unshift(entry.render);  // asked again once the newer one is answered
    } else {
      this.handlers.failed(entry, message);
    }
    if (entry === this.latest) this.handlers.progress(entry);
    this.renderWhenIdle();
  }
}
