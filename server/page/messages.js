// The page and the server: opening an image starts its session
// (session.js), the current prompt is asked for when nothing answers it yet,
// and what the session reports (the image prepared, an answer, an error,
// progress, the connection) becomes a change of the state or a sentence.

import {advice} from "./advice.js";
import {canvasScale, clearLayers, view} from "./drawing.js";
import {showConnection, showError, showProgress, showServerState} from "./panel.js";
import {loadObjects} from "./persist.js";
import {Session, serverState} from "./session.js";
import {
  acceptFailed, answered, app, applyFullMasks, changed, currentPrompt, forgetRefinement, hasAnswer, isEmpty, isFullSize,
  openedImage, propose, refKey, renderedFull, restoreObjects, state,
} from "./state.js";

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
    const key = object.from && refKey(object.from);
    if (!key || asked.has(key) || isFullSize(object.mask)) continue;
    asked.add(key);
    session.render(object.from);
  }
}

// Segment everything: its masks come back as unlabelled objects.
export function askEverything(text) {
  let parameters;
  try {
    parameters = JSON.parse(text || "{}");
  } catch {
    parameters = null;
  }
  if (!parameters || typeof parameters !== "object" || Array.isArray(parameters)) {
    showError('The parameters must be a JSON object, such as {"points_per_side": 16}; {} takes the defaults.');
    return;
  }
  if (app.session) app.session.everything(parameters);
}

// Open an entry of the image set (imageset.js), with the work it keeps:
// `source` is what the server reads, `display` what this browser shows.
export function openEntry(entry, source, display) {
  if (app.session) app.session.close();
  clearTimeout(liveTimer);
  const image = {name: entry.name, source, element: new Image(), width: entry.width, height: entry.height,
                 sha256: null, loaded: false, refused: null};
  openedImage(image, entry.history, entry.selected);
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
    if (entry.view) view.restore(entry.view);
    changed();
  };
  image.element.onerror = () => {
    if (app.image === image) showError("This browser cannot show that image: check the URL, or open the file instead.");
  };
  image.element.src = display;
  app.session = new Session(source, app.token, sessionHandlers(image, entry), entry.sha256);
  changed();
}

// Everything the session reports is about `image` (of the set's entry `opened`); once another image is
// open, it is dropped here, and the session itself only reports answers to
// its own requests about its own image.
function sessionHandlers(image, opened) {
  const mine = () => app.image === image;
  return {
    prepared(entry, result) {
      if (!mine()) return;
      const fresh = !image.sha256;
      opened.refused = null;  // refused before (as the next image, say), read now
      image.sha256 = opened.sha256 = result.image.sha256;
      image.width = opened.width = result.image.width;
      image.height = opened.height = result.image.height;
      if (image.loaded) checkSize(image);
      changed();
      if (fresh && opened.savedObjects?.length) restoreObjects(opened.savedObjects);
      else if (fresh) loadObjects(image.sha256).then((saved) => mine() && restoreObjects(saved));
    },
    answer(entry, result) {
      if (mine()) answered(entry.prompt, entry.multimask, result);
    },
    everything(entry, result) {
      if (mine()) propose(result.masks, result.id);
    },
    rendered(entry, result) {
      if (mine()) renderedFull(entry.render, result.masks[0]);
    },
    failed(entry, error) {
      if (!mine()) return;
      if (error.code === "mask_unknown" && entry.prompt) {
        forgetRefinement(entry.prompt);
        return;
      }
      if (entry.prompt) acceptFailed(entry.prompt);
      if (entry.kind === "prepare") refused(image, opened, error);
      else if (entry.kind === "render") showError(`An object's full-size mask could not be made (${advice(error)}): delete it and segment it again.`, error.code);
      else showError(advice(error), error.code);
    },
    progress(entry) {
      if (mine()) showProgress(entry);
    },
    connection(condition, health) {
      if (mine()) showConnection(condition, health);
    },
  };
}

// The server refused the image: it is no longer shown, and the sentence says what to do.
function refused(image, entry, error) {
  image.refused = entry.refused = advice(error);
  showError(advice(error), error.code);
  const hint = document.getElementById("hint");
  hint.textContent = advice(error);
  hint.hidden = false;
  changed();
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
