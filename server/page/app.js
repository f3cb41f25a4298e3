// The page: open an image, click and drag prompts on it, accept masks as
// labelled objects, export them. See README, "The page".

import {History} from "./history.js";
import {maskPixels} from "./rle.js";
import {cocoDocument, labelIndexPng, objectPngs} from "./exports.js";
import {Session, serverState} from "./session.js";
import * as storage from "./storage.js";
import {View} from "./view.js";

// Objects' colours (the command-line client uses the same ones), the current mask's, the points'.
const COLOURS = [
  [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [0, 128, 128], [170, 110, 40],
];
const CURRENT = [30, 144, 255];
const POSITIVE = "rgb(40, 200, 60)", NEGATIVE = "rgb(230, 40, 40)";
const MASK_ALPHA = 140, SELECTED_ALPHA = 220;
const HANDLE = 7;      // screen pixels around a box's corner or edge, or a point, that catch the mouse
const DRAG = 4;        // screen pixels a press must move to become a drag
const LIVE_MS = 120;   // while a box is dragged, at most one request per this many milliseconds
const ZOOM_STEP = 0.0015;

const $ = (id) => document.getElementById(id);
const canvas = $("view"), stage = $("stage");
const objectsLayer = $("objects-layer"), currentLayer = $("current-layer");
const view = new View(canvas);

// --- state ------------------------------------------------------------------------------

// A prompt is what one request asks about: points, a box, and the earlier
// mask it refines. Its answers (one per multimask setting) are attached to
// it when they arrive, so that undo and redo bring back each step's own mask.
let promptSerial = 0;
function newPrompt({points = [], box = null, maskFrom = null} = {}) {
  return {serial: ++promptSerial, points, box, maskFrom, answers: {}};
}
const isEmpty = (prompt) => !prompt.box && prompt.points.length === 0;

const app = {
  image: null,      // {name, source, element, width, height, sha256, loaded}
  session: null,
  history: new History({objects: [], prompt: newPrompt(), chosen: null}),
  live: null,       // the prompt of a box being dragged: shown and asked for, not yet a step
  selected: null,   // an object's id
  drag: null,
  space: false,
  lastLiveAsk: 0,
  liveTimer: null,
  savedObjects: null,
  token: storage.load("token", ""),
  settings: storage.load("settings", {multimask: false, polygons: false}),
};

const state = () => app.history.current;
const currentPrompt = () => app.live || state().prompt;
const answerKey = () => (app.settings.multimask ? "multi" : "single");
const answerOf = (prompt) => prompt.answers[answerKey()] || null;

function bestIndex(answer) {
  return answer.candidates.reduce((best, mask, i, all) => (mask.score > all[best].score ? i : best), 0);
}

function chosenIndex(answer) {
  const chosen = app.live ? null : state().chosen;
  return chosen !== null && chosen < answer.candidates.length ? chosen : bestIndex(answer);
}

// The mask shown for the current prompt, or null while there is none.
function currentMask() {
  const answer = answerOf(currentPrompt());
  if (!answer) return null;
  const index = chosenIndex(answer);
  return {answer, index, mask: answer.candidates[index]};
}

// Record a step. A new prompt starts with its best candidate shown.
function step(change) {
  const now = state();
  const chosen = "prompt" in change && change.prompt !== now.prompt ? null : now.chosen;
  app.history.push({...now, chosen, ...change});
  sync();
}

// --- prompts and objects: every change is one step ----------------------------------------

function refinement(prompt) {
  const answer = answerOf(prompt);
  if (!answer) return prompt.maskFrom;
  const from = {id: answer.id, index: 0};
  if (answer.multimask) from.candidate = chosenIndex(answer);
  return from;
}

function addPoint(x, y, label) {
  const prompt = state().prompt;
  step({prompt: newPrompt({points: [...prompt.points, {x, y, label}], box: prompt.box, maskFrom: refinement(prompt)})});
}

function removePoint(index) {
  const prompt = state().prompt;
  step({prompt: newPrompt({points: prompt.points.filter((_, i) => i !== index), box: prompt.box})});
}

function clearPrompt() {
  if (isEmpty(state().prompt)) return;
  step({prompt: newPrompt()});
}

function nextCandidate() {
  const shown = currentMask();
  if (!shown || shown.answer.candidates.length < 2) return;
  step({prompt: state().prompt, chosen: (shown.index + 1) % shown.answer.candidates.length});
}

let objectSerial = 0;
function accept() {
  const shown = currentMask();
  if (!shown || app.live) return;
  const label = $("label").value.trim() || "object";
  storage.save("label", label);
  const objects = state().objects;
  const colour = objects.length ? Math.max(...objects.map((object) => object.colour)) + 1 : 0;
  const object = {id: `${Date.now().toString(36)}-${++objectSerial}`, label, colour, hidden: false,
                  mask: shown.mask, request: shown.answer.id};
  app.selected = object.id;
  step({objects: [...objects, object], prompt: newPrompt()});
}

function changeObject(id, change) {
  step({objects: state().objects.map((object) => (object.id === id ? {...object, ...change} : object))});
}

function deleteObject(id) {
  if (app.selected === id) app.selected = null;
  step({objects: state().objects.filter((object) => object.id !== id)});
}

function undo() {
  app.history.undo();
  sync();
}

function redo() {
  app.history.redo();
  sync();
}

// After every change: ask for the current prompt's masks if nothing has
// answered or is answering them, save the objects, and show it all.
function sync() {
  const prompt = currentPrompt(), session = app.session;
  if (session && !isEmpty(prompt) && !answerOf(prompt) && !session.asking(prompt, app.settings.multimask)) {
    if (app.live) {
      const wait = app.lastLiveAsk + LIVE_MS - performance.now();
      clearTimeout(app.liveTimer);
      if (wait > 0) app.liveTimer = setTimeout(sync, wait);
      else if (session.ask(prompt, app.settings)) app.lastLiveAsk = performance.now();
    } else {
      session.ask(prompt, app.settings);
    }
  }
  saveObjects();
  showControls();
  showObjects();
  paintLayers();
  render();
}

function saveObjects() {
  const objects = state().objects;
  if (!app.image || !app.image.sha256 || objects === app.savedObjects) return;
  app.savedObjects = objects;
  if (!storage.saveObjects(app.image.sha256, objects)) {
    showError("This browser would not keep the objects (its local storage is full or off): export them before you leave.");
  }
}

// --- the image and its session ------------------------------------------------------------

function openImage({name, source, display}) {
  if (app.session) app.session.close();
  clearTimeout(app.liveTimer);
  const image = {name, source, element: new Image(), width: 0, height: 0, sha256: null, loaded: false};
  Object.assign(app, {image, live: null, selected: null, drag: null, savedObjects: null,
                      history: new History({objects: [], prompt: newPrompt(), chosen: null})});
  clearLayers();
  showError("");
  $("hint").hidden = true;
  image.element.onload = () => {
    if (app.image !== image) return;
    image.loaded = true;
    image.width ||= image.element.naturalWidth;
    image.height ||= image.element.naturalHeight;
    checkSize(image);
    view.setImage(image.width, image.height);
    sync();
  };
  image.element.onerror = () => {
    if (app.image === image) showError("This browser cannot show that image: check the URL, or open the file instead.");
  };
  image.element.src = display;
  storage.save("image", source.startsWith("data:") ? {name} : {name, url: source});
  app.session = new Session(source, app.token, sessionHandlers(image));
  sync();
}

// Everything the session reports is about `image`; once another image is
// open, it is dropped here, and the session itself only reports answers to
// its own requests about its own image.
function sessionHandlers(image) {
  const mine = () => app.image === image;
  return {
    prepared(entry, result) {
      if (!mine()) return;
      const fresh = !image.sha256;
      image.sha256 = result.image.sha256;
      image.width = result.image.width;
      image.height = result.image.height;
      if (image.loaded) checkSize(image);
      if (fresh) {
        const saved = storage.loadObjects(image.sha256);
        if (saved && saved.length && state().objects.length === 0) {
          app.history = new History({...state(), objects: saved});
          app.savedObjects = saved;
        }
      }
      sync();
    },
    answer(entry, result) {
      if (!mine()) return;
      const [masks] = result.masks;
      entry.prompt.answers[entry.multimask ? "multi" : "single"] = {
        id: result.id, multimask: entry.multimask, candidates: Array.isArray(masks) ? masks : [masks],
      };
      sync();
    },
    failed(entry, error) {
      if (!mine()) return;
      if (error.code === "mask_unknown" && entry.prompt) {
        entry.prompt.maskFrom = null;  // the server forgot the mask to refine: ask without it
        sync();
        return;
      }
      showError(error.message, error.code);
    },
    progress(entry) {
      if (mine()) showProgress(entry);
    },
    connection(condition, health) {
      if (mine()) showConnection(condition, health);
    },
  };
}

function checkSize(image) {
  const {naturalWidth: width, naturalHeight: height} = image.element;
  if (image.sha256 && (width !== image.width || height !== image.height)) {
    showError(`This browser shows the image at ${width}x${height} but the server reads ${image.width}x${image.height}: the masks will not line up.`);
  }
}

function openUrl(url) {
  const name = decodeURIComponent(new URL(url, location.href).pathname.split("/").pop() || "image");
  openImage({name, source: url, display: url});
}

function openFile(file) {
  if (!["image/png", "image/jpeg", "image/webp"].includes(file.type)) {
    showError(`${file.name} is not a PNG, JPEG or WebP image.`);
    return;
  }
  const reader = new FileReader();
  reader.onload = () => openImage({name: file.name, source: reader.result, display: URL.createObjectURL(file)});
  reader.onerror = () => showError(`This browser could not read ${file.name}.`);
  reader.readAsDataURL(file);  // sent as a data: URL
}

// --- what the page says -------------------------------------------------------------------

function showError(sentence, code) {
  $("error").textContent = sentence;
  $("error").title = code || "";
}

let ticker = null;
function showProgress(entry) {
  clearInterval(ticker);
  const say = () => {
    const seconds = ((performance.now() - entry.sentAt) / 1000).toFixed(1);
    const queued = entry.phase === "queued" && entry.position > 1 ? `, position ${entry.position} in the queue` : "";
    const doing = entry.kind === "prepare" ? "preparing" : "segmenting";
    $("progress").textContent = `${doing}… ${seconds} s${queued}`;
  };
  if (entry.phase === "result") {
    const seconds = entry.elapsed.toFixed(2);
    $("progress").textContent = entry.kind === "prepare"
      ? `Prepared in ${seconds} s: click the object.` : `Mask in ${seconds} s.`;
    if (entry.kind === "prepare") showError("");
  } else if (entry.phase === "error") {
    $("progress").textContent = "";
  } else {
    say();
    ticker = setInterval(say, 100);
  }
}

function showConnection(condition, health) {
  const sentences = {
    connecting: "Connecting…",
    open: "Connected.",
    idle: "Connected (the session rests until the next click).",
    ready: "The server is up; connecting…",
    unready: `The server is not ready yet${health && health.model_loaded === false ? " (the model is loading)" : ""}; trying again.`,
    gone: "The server is gone: it does not answer. The page reconnects when it is back.",
    token: app.token
      ? "The server refused the API token: type the right one in the Token field."
      : "This server needs an API token: type it in the Token field.",
  };
  $("connection").textContent = sentences[condition];
  $("connection").dataset.state = condition;
  if (condition !== "open" && condition !== "idle" && condition !== "connecting") clearInterval(ticker);
}

// Before any image is open, and whenever the token changes: is the server there, and does it take the token?
let watching = null;
async function checkServer() {
  clearTimeout(watching);
  if (app.session) return;
  const {state: condition, body} = await serverState(app.token);
  if (app.session) return;
  $("connection").textContent = {
    ready: "The server is ready.",
    unready: "The server is not ready yet.",
  }[condition] || "";
  if (condition !== "ready" && condition !== "unready") showConnection(condition, body);
  $("connection").dataset.state = condition;
  if (condition === "gone" || condition === "unready") watching = setTimeout(checkServer, 2000);
}

function showControls() {
  const prompt = currentPrompt(), shown = currentMask();
  $("accept").disabled = !shown || Boolean(app.live);
  $("clear").disabled = isEmpty(prompt);
  $("undo").disabled = !app.history.canUndo;
  $("redo").disabled = !app.history.canRedo;
  const candidates = shown ? shown.answer.candidates.length : 0;
  $("next-candidate").disabled = candidates < 2;
  $("candidate").textContent = shown
    ? `${candidates > 1 ? `candidate ${shown.index + 1} of ${candidates}, ` : ""}score ${shown.mask.score.toFixed(3)}` : "";
  const none = state().objects.length === 0;
  for (const id of ["export-coco", "export-pngs", "export-index"]) $(id).disabled = none || !app.image?.sha256;
  $("multimask").checked = app.settings.multimask;
  $("polygons").checked = app.settings.polygons;
}

let shownObjects = null, shownSelected = null;
function showObjects() {
  const objects = state().objects;
  if (objects === shownObjects && app.selected === shownSelected) return;
  shownObjects = objects;
  shownSelected = app.selected;
  $("objects").replaceChildren(...objects.map((object) => {
    const item = document.createElement("li");
    item.dataset.id = object.id;
    item.classList.toggle("selected", object.id === app.selected);
    item.classList.toggle("hidden", object.hidden);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${colourOf(object).join(", ")})`;
    const name = document.createElement("input");
    name.className = "name";
    name.value = object.label;
    name.setAttribute("aria-label", "label");
    name.addEventListener("change", () => {
      const label = name.value.trim();
      if (label && label !== object.label) changeObject(object.id, {label});
      else name.value = object.label;
    });
    const hide = button(object.hidden ? "show" : "hide", () => changeObject(object.id, {hidden: !object.hidden}));
    const remove = button("delete", () => deleteObject(object.id));
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `score ${object.mask.score.toFixed(3)}, area ${object.mask.area} px`;
    item.append(swatch, name, hide, remove, score);
    item.addEventListener("pointerdown", () => select(object.id));
    return item;
  }));
  const labels = [...new Set([storage.load("label", "object"), ...objects.map((object) => object.label)])];
  $("labels").replaceChildren(...labels.map((label) => Object.assign(document.createElement("option"), {value: label})));
}

function button(text, action) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  element.addEventListener("click", action);
  return element;
}

// Selecting marks the row in place: rebuilding the list would swallow the click that selected it.
function select(id) {
  if (app.selected === id) return;
  app.selected = shownSelected = id;
  for (const item of $("objects").children) item.classList.toggle("selected", item.dataset.id === id);
  paintLayers();
  render();
}

const colourOf = (object) => COLOURS[object.colour % COLOURS.length];

// --- drawing ------------------------------------------------------------------------------

// Paint masks into a layer of the image's size: each its colour, later ones on top.
function paintLayer(layer, width, height, masks) {
  if (layer.width !== width || layer.height !== height) Object.assign(layer, {width, height});
  const context = layer.getContext("2d");
  if (!masks.length) {
    context.clearRect(0, 0, width, height);
    return;
  }
  const pixels = new ImageData(width, height), data = pixels.data;
  for (const {segmentation, colour, alpha} of masks) {
    const mask = maskPixels(segmentation);
    const [r, g, b] = colour;
    for (let p = 0; p < mask.length; p++) {
      if (mask[p]) {
        data[4 * p] = r;
        data[4 * p + 1] = g;
        data[4 * p + 2] = b;
        data[4 * p + 3] = alpha;
      }
    }
  }
  context.putImageData(pixels, 0, 0);
}

let paintedObjects = null, paintedSelected = null, paintedMask = null, waiting = false;

// A new image starts with empty layers: nothing painted for another image is ever shown over it.
function clearLayers() {
  paintedObjects = paintedSelected = paintedMask = null;
  for (const layer of [objectsLayer, currentLayer]) layer.getContext("2d").clearRect(0, 0, layer.width, layer.height);
  currentLayer.dataset.answer = "";
}
// The layers change with the state, at once (the view draws them at its next frame).
function paintLayers() {
  const image = app.image, objects = state().objects;
  if (!image || !image.width) return;
  if (objects !== paintedObjects || app.selected !== paintedSelected) {
    paintedObjects = objects;
    paintedSelected = app.selected;
    paintLayer(objectsLayer, image.width, image.height, objects.filter((object) => !object.hidden).map((object) => ({
      segmentation: object.mask.segmentation, colour: colourOf(object),
      alpha: object.id === app.selected ? SELECTED_ALPHA : MASK_ALPHA,
    })));
  }
  // The current mask stays until the next one arrives (dimmed meanwhile), or the prompt is cleared.
  const shown = currentMask();
  const mask = shown ? shown.mask : isEmpty(currentPrompt()) ? null : paintedMask;
  if (mask !== paintedMask) {
    paintedMask = mask;
    paintLayer(currentLayer, image.width, image.height,
               mask ? [{segmentation: mask.segmentation, colour: CURRENT, alpha: MASK_ALPHA}] : []);
    currentLayer.dataset.answer = shown ? `${shown.answer.id}:${shown.index}` : "";
  }
  waiting = Boolean(mask) && !shown;
}

let frame = null;
function render() {
  if (frame === null) frame = requestAnimationFrame(draw);
}

function draw() {
  frame = null;
  view.resize();
  const context = canvas.getContext("2d");
  view.screenTransform(context);
  context.clearRect(0, 0, canvas.clientWidth, canvas.clientHeight);
  const image = app.image;
  if (!image || !image.loaded) return;
  view.imageTransform(context);
  context.imageSmoothingEnabled = view.scale < 1;  // image pixels show as squares when zoomed in
  context.drawImage(image.element, 0, 0, image.width, image.height);
  context.drawImage(objectsLayer, 0, 0);
  context.globalAlpha = waiting ? 0.4 : 1;
  context.drawImage(currentLayer, 0, 0);
  context.globalAlpha = 1;
  view.screenTransform(context);
  drawPrompt(context, currentPrompt());
}

function drawPrompt(context, prompt) {
  if (prompt.box) {
    const [x0, y0] = view.toScreen(prompt.box.x, prompt.box.y);
    const [x1, y1] = view.toScreen(prompt.box.x + prompt.box.width, prompt.box.y + prompt.box.height);
    context.lineWidth = 2;
    context.strokeStyle = "#fff";
    context.strokeRect(x0, y0, x1 - x0, y1 - y0);
    context.setLineDash([6, 4]);
    context.strokeStyle = "#000";
    context.strokeRect(x0, y0, x1 - x0, y1 - y0);
    context.setLineDash([]);
    context.fillStyle = "#fff";
    for (const [x, y] of [[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) context.fillRect(x - 4, y - 4, 8, 8);
  }
  for (const point of prompt.points) {
    const [x, y] = view.toScreen(point.x, point.y);
    context.beginPath();
    context.arc(x, y, 6, 0, 2 * Math.PI);
    context.fillStyle = point.label ? POSITIVE : NEGATIVE;
    context.fill();
    context.lineWidth = 2;
    context.strokeStyle = "#fff";
    context.stroke();
  }
}

// --- the mouse ----------------------------------------------------------------------------

const round = (value, places) => Math.round(value * 10 ** places) / 10 ** places;

// The image pixel under a screen point, or null outside the image.
function imagePoint(sx, sy, clamp = false) {
  let [x, y] = view.toImage(sx, sy);
  const {width, height} = app.image;
  if (clamp) {
    x = Math.min(Math.max(x, 0), width);
    y = Math.min(Math.max(y, 0), height);
  } else if (x < 0 || y < 0 || x > width || y > height) {
    return null;
  }
  return [round(x, 1), round(y, 1)];
}

function boxFromCorners([ax, ay], [bx, by]) {
  const x = Math.round(Math.min(ax, bx)), y = Math.round(Math.min(ay, by));
  return {x, y, width: Math.round(Math.max(ax, bx)) - x, height: Math.round(Math.max(ay, by)) - y};
}

// What a press at (sx, sy) grabs of the current prompt: a point, a box corner or edge, or nothing.
function grab(sx, sy) {
  const prompt = state().prompt;
  const point = prompt.points.findIndex((p) => {
    const [x, y] = view.toScreen(p.x, p.y);
    return Math.hypot(x - sx, y - sy) <= HANDLE;
  });
  if (point >= 0) return {kind: "point", index: point};
  const box = prompt.box;
  if (!box) return null;
  const [x0, y0] = view.toScreen(box.x, box.y), [x1, y1] = view.toScreen(box.x + box.width, box.y + box.height);
  const near = (a, b) => Math.abs(a - b) <= HANDLE;
  for (const [cx, cy, ox, oy] of [[x0, y0, x1, y1], [x1, y0, x0, y1], [x0, y1, x1, y0], [x1, y1, x0, y0]]) {
    if (near(sx, cx) && near(sy, cy)) return {kind: "resize", anchor: view.toImage(ox, oy)};
  }
  const alongX = sx > x0 - HANDLE && sx < x1 + HANDLE, alongY = sy > y0 - HANDLE && sy < y1 + HANDLE;
  if ((alongX && (near(sy, y0) || near(sy, y1))) || (alongY && (near(sx, x0) || near(sx, x1)))) return {kind: "move"};
  return null;
}

function liveBox(box) {
  if (box.width < 1 || box.height < 1) return;
  const points = state().prompt.points;
  app.live = newPrompt({points, box});
  sync();
}

canvas.addEventListener("pointerdown", (event) => {
  if (!app.image || !app.image.loaded) return;
  const [sx, sy] = view.eventPoint(event);
  canvas.setPointerCapture(event.pointerId);
  stage.focus();
  if (event.button === 1 || (event.button === 0 && app.space)) {
    app.drag = {kind: "pan", sx, sy};
    stage.classList.add("panning");
    event.preventDefault();
  } else if (event.button === 2) {
    const point = imagePoint(sx, sy);
    if (point) addPoint(...point, 0);
  } else if (event.button === 0) {
    const grabbed = grab(sx, sy);
    app.drag = {kind: "press", sx, sy, shift: event.shiftKey, grabbed, start: view.toImage(sx, sy),
                box: state().prompt.box, moved: false};
  }
});

canvas.addEventListener("pointermove", (event) => {
  const [sx, sy] = view.eventPoint(event);
  const drag = app.drag;
  if (!drag) {
    hover(sx, sy);
    return;
  }
  if (drag.kind === "pan") {
    view.panBy(sx - drag.sx, sy - drag.sy);
    Object.assign(drag, {sx, sy});
    render();
    return;
  }
  if (!drag.moved && Math.hypot(sx - drag.sx, sy - drag.sy) < DRAG) return;
  drag.moved = true;
  const here = imagePoint(sx, sy, true);
  const grabbed = drag.grabbed;
  if (grabbed && grabbed.kind === "resize") {
    liveBox(boxFromCorners(grabbed.anchor, here));
  } else if (grabbed && grabbed.kind === "move") {
    const {width, height} = app.image, box = drag.box;
    const [ix, iy] = view.toImage(sx, sy);
    const x = Math.min(Math.max(box.x + Math.round(ix - drag.start[0]), 0), width - box.width);
    const y = Math.min(Math.max(box.y + Math.round(iy - drag.start[1]), 0), height - box.height);
    liveBox({x, y, width: box.width, height: box.height});
  } else {
    liveBox(boxFromCorners(imagePoint(drag.sx, drag.sy, true), here));
  }
});

function endDrag(event) {
  const drag = app.drag;
  app.drag = null;
  stage.classList.remove("panning");
  if (!drag || drag.kind === "pan") return;
  if (drag.moved) {
    const live = app.live;
    app.live = null;
    if (live) step({prompt: live});
    else sync();
    return;
  }
  if (drag.grabbed && drag.grabbed.kind === "point") {
    removePoint(drag.grabbed.index);
    return;
  }
  const point = imagePoint(drag.sx, drag.sy);
  if (point && event.type === "pointerup") addPoint(...point, drag.shift ? 0 : 1);
}
canvas.addEventListener("pointerup", endDrag);
canvas.addEventListener("pointercancel", endDrag);
canvas.addEventListener("contextmenu", (event) => event.preventDefault());

function hover(sx, sy) {
  const grabbed = app.image && app.image.loaded && !app.space ? grab(sx, sy) : null;
  stage.classList.toggle("move", grabbed?.kind === "move");
  stage.classList.toggle("resize", grabbed?.kind === "resize");
}

canvas.addEventListener("wheel", (event) => {
  event.preventDefault();
  if (!app.image || !app.image.loaded) return;
  const [sx, sy] = view.eventPoint(event);
  view.zoomAt(sx, sy, Math.exp(-event.deltaY * ZOOM_STEP));
  render();
}, {passive: false});

new ResizeObserver(() => {
  view.resize();
  if (app.image && view.imageWidth) view.fit();
  render();
}).observe(canvas);
canvas.addEventListener("mousedown", (event) => {
  if (event.button === 1) event.preventDefault();  // a middle press pans here, it does not autoscroll
});

// Drop an image file on the stage.
stage.addEventListener("dragover", (event) => {
  event.preventDefault();
  stage.classList.add("drop");
});
stage.addEventListener("dragleave", () => stage.classList.remove("drop"));
stage.addEventListener("drop", (event) => {
  event.preventDefault();
  stage.classList.remove("drop");
  const file = event.dataTransfer.files[0];
  if (file) openFile(file);
});

// --- the keyboard -------------------------------------------------------------------------

window.addEventListener("keydown", (event) => {
  const typing = event.target.matches("input, textarea, select");
  const control = event.ctrlKey || event.metaKey;
  if (event.target === $("label") && event.key === "Enter") {
    event.preventDefault();
    accept();
    return;
  }
  if (typing) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  const key = event.key.toLowerCase();
  if (control && key === "z") event.shiftKey ? redo() : undo();
  else if (control && key === "y") redo();
  else if (control || event.altKey) return;
  else if (event.key === " ") {
    app.space = true;
    stage.classList.add("space");
  } else if (event.key === "Enter") accept();
  else if (event.key === "Escape") clearPrompt();
  else if (key === "m") toggleMultimask();
  else if (key === "c") nextCandidate();
  else if (key === "f" && app.image) {
    view.fit();
    render();
  } else if (key === "h" && app.selected) {
    const object = state().objects.find((o) => o.id === app.selected);
    if (object) changeObject(object.id, {hidden: !object.hidden});
  } else if ((event.key === "Delete" || event.key === "Backspace") && app.selected) deleteObject(app.selected);
  else return;
  event.preventDefault();
});

window.addEventListener("keyup", (event) => {
  if (event.key === " ") {
    app.space = false;
    stage.classList.remove("space");
  }
});

// --- the controls -------------------------------------------------------------------------

function toggleMultimask() {
  app.settings = {...app.settings, multimask: !app.settings.multimask};
  storage.save("settings", app.settings);
  sync();
}

$("open-url").addEventListener("submit", (event) => {
  event.preventDefault();
  const url = $("image-url").value.trim();
  if (url) openUrl(url);
});
$("image-file").addEventListener("change", () => {
  const file = $("image-file").files[0];
  if (file) openFile(file);
});
$("token").value = app.token;
$("token").addEventListener("change", () => {
  app.token = $("token").value.trim();
  storage.save("token", app.token);
  if (app.session) app.session.setToken(app.token);
  else checkServer();
});
$("label").value = storage.load("label", "object");
$("accept").addEventListener("click", accept);
$("clear").addEventListener("click", clearPrompt);
$("undo").addEventListener("click", undo);
$("redo").addEventListener("click", redo);
$("next-candidate").addEventListener("click", nextCandidate);
$("multimask").addEventListener("change", toggleMultimask);
$("polygons").addEventListener("change", () => {
  app.settings = {...app.settings, polygons: $("polygons").checked};
  storage.save("settings", app.settings);
});

// --- exports ------------------------------------------------------------------------------

function download(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

const baseName = () => app.image.name.replace(/\.[^.]*$/, "") || "image";
const exportedImage = () => ({name: app.image.name, width: app.image.width, height: app.image.height,
                              sha256: app.image.sha256});

$("export-coco").addEventListener("click", () => {
  const document_ = cocoDocument(exportedImage(), state().objects, {polygons: app.settings.polygons});
  download(new Blob([JSON.stringify(document_)], {type: "application/json"}), `${baseName()}.coco.json`);
});
$("export-pngs").addEventListener("click", async () => {
  download(await objectPngs(state().objects), `${baseName()}.masks.zip`);
});
$("export-index").addEventListener("click", async () => {
  try {
    download(await labelIndexPng(exportedImage(), state().objects), `${baseName()}.labels.png`);
  } catch (error) {
    showError(error.message);
  }
});

// --- start: the last image comes back, with its objects --------------------------------------

const last = storage.load("image", null);
if (last && last.url) {
  $("image-url").value = last.url;
  openUrl(last.url);
} else {
  if (last) $("progress").textContent = `Open ${last.name} again to go on with its objects.`;
  checkServer();
}
