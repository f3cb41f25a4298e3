// The page and the server: opening an image starts its session
// (session.js), the current prompt is asked for when nothing answers it yet,
// and what the session reports (the image prepared, an answer, an error,
// progress, the connection) becomes a change of the state or a sentence.

import {canvasScale, clearLayers, view} from "./drawing.js";
import {showConnection, showError, showProgress, showServerState} from "./panel.js";
import {Session, serverState} from "./session.js";
import {
  answered, app, applyFullMasks, changed, currentPrompt, forgetRefinement, hasAnswer, isEmpty, isFullSize, openedImage,
  refKey, renderedFull, restoreObjects, state,
} from "./state.js";
import * as storage from "./storage.js";

const LIVE_MS = 120;   // while a box is dragged, at most one request per this many milliseconds

let lastLiveAsk = 0, liveTimer = null;

// Ask for the current prompt's masks, at the canvas's size, if nothing has answered or is answering them.
export function askForCurrentPrompt() {
  const prompt = currentPrompt(), session = app.session;
  if (!session || isEmpty(prompt) || hasAnswer(prompt) || session.asking(prompt, app.settings.multimask)) return;
  const settings = {...app.settings, maskScale: canvasScale()};
  if (app.live) {
    const wait = lastLiveAsk + LIVE_MS - performance.now();
    clearTimeout(liveTimer);
    if (wait > 0) liveTimer = setTimeout(changed, wait);
    else if (session.ask(prompt, settings)) lastLiveAsk = performance.now();
  } else {
    session.ask(prompt, settings);
  }
}

// Ask once, per session, for each accepted object's mask at full size (`render`): exports are exact.
const rendersAsked = new WeakMap();  // session -> the refs asked on it
export function askForFullSizeObjects() {
  const session = app.session;
  if (!session || !app.image || !app.image.width) return;
  if (!rendersAsked.has(session)) rendersAsked.set(session, new Set());
  const asked = rendersAsked.get(session);
  applyFullMasks();  // an object back by undo or redo, whose full-size mask came meanwhile
  for (const object of state().objects) {
    const key = object.ref && refKey(object.ref);
    if (!key || asked.has(key) || isFullSize(object.mask)) continue;
    asked.add(key);
    session.render(object.ref, app.settings);
  }
}

function openImage({name, source, display}) {
  if (app.session) app.session.close();
  clearTimeout(liveTimer);
  const image = {name, source, element: new Image(), width: 0, height: 0, sha256: null, loaded: false};
  openedImage(image);
  clearLayers();
  showError("");
  document.getElementById("hint").hidden = true;
  image.element.onload = () => {
    if (app.image !== image) return;
    image.loaded = true;
    image.width ||= image.element.naturalWidth;
    image.height ||= image.element.naturalHeight;
    checkSize(image);
    view.setImage(image.width, image.height);
    changed();
  };
  image.element.onerror = () => {
    if (app.image === image) showError("This browser cannot show that image: check the URL, or open the file instead.");
  };
  image.element.src = display;
  storage.save("image", source.startsWith("data:") ? {name} : {name, url: source});
  app.session = new Session(source, app.token, sessionHandlers(image));
  changed();
}

export function openUrl(url) {
  const name = decodeURIComponent(new URL(url, location.href).pathname.split("/").pop() || "image");
  openImage({name, source: url, display: url});
}

export function openFile(file) {
  if (!["image/png", "image/jpeg", "image/webp"].includes(file.type)) {
    showError(`${file.name} is not a PNG, JPEG or WebP image.`);
    return;
  }
  const reader = new FileReader();
  reader.onload = () => openImage({name: file.name, source: reader.result, display: URL.createObjectURL(file)});
  reader.onerror = () => showError(`This browser could not read ${file.name}.`);
  reader.readAsDataURL(file);  // sent as a data: URL
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
      if (fresh) restoreObjects(storage.loadObjects(image.sha256));
      changed();
    },
    answer(entry, result) {
      if (mine()) answered(entry.prompt, entry.multimask, result);
    },
    rendered(entry, result) {
      if (mine()) renderedFull(entry.render.ref, result.masks[0]);
    },
    failed(entry, error) {
      if (!mine()) return;
      if (error.code === "mask_unknown" && entry.prompt) forgetRefinement(entry.prompt);
      else showError(error.message, error.code);
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

// A new token: the open session uses it; with none open, /health says whether the server takes it.
export function tokenChanged() {
  if (app.session) app.session.setToken(app.token);
  else checkServer();
}

// Before any image is open, and whenever the token changes: is the server there, and does it take the token?
let watching = null;
export async function checkServer() {
  clearTimeout(watching);
  if (app.session) return;
  const {state: condition, body} = await serverState(app.token);
  if (app.session) return;
  showServerState(condition, body);
  if (condition === "gone" || condition === "unready") watching = setTimeout(checkServer, 2000);
}
