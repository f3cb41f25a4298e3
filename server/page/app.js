// The page: open an image, click and drag prompts on it, accept masks as
// labelled objects, export them. See README, "The page".
//
// The modules, by concern (plain ES modules, no build step):
//   state.js     the state and every change to it (no document access)
//   input.js     mouse, keys, dropped files and the controls: changes of the state
//   messages.js  the image's session with the server: asking, and what it answers
//   drawing.js   the image, the masks and the prompt on the canvas
//   panel.js     the controls' state, the objects list and the footer's sentences
// with session.js (the protocol), view.js, history.js, storage.js, rle.js and
// exports.js beneath them. This file ties them together: after every change
// of the state, `sync` asks, saves and shows.

import {paintLayers, render} from "./drawing.js";
import {cocoDocument, labelIndexPng, objectPngs} from "./exports.js";
import {listen} from "./input.js";
import {askForCurrentPrompt, askForFullSizeObjects, checkServer, openUrl} from "./messages.js";
import {showControls, showError, showObjects, showProgressHint} from "./panel.js";
import {app, isFullSize, onChange, state} from "./state.js";
import * as storage from "./storage.js";

const $ = (id) => document.getElementById(id);

// After every change: ask for the current prompt's masks if nothing has
// answered or is answering them, save the objects, and show it all.
function sync() {
  askForCurrentPrompt();
  askForFullSizeObjects();
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

// Exports are of full-size masks only: an object accepted a moment ago may still have its canvas-sized one.
function allFullSize() {
  const waiting = state().objects.filter((object) => !isFullSize(object.mask)).length;
  if (waiting) showError(`${waiting} object${waiting === 1 ? "'s" : "s'"} full-size mask${waiting === 1 ? " is" : "s are"} still on the way: save again in a moment.`);
  return !waiting;
}

$("export-coco").addEventListener("click", () => {
  if (!allFullSize()) return;
  const document_ = cocoDocument(exportedImage(), state().objects, {polygons: app.settings.polygons});
  download(new Blob([JSON.stringify(document_)], {type: "application/json"}), `${baseName()}.coco.json`);
});
$("export-pngs").addEventListener("click", async () => {
  if (!allFullSize()) return;
  download(await objectPngs(state().objects), `${baseName()}.masks.zip`);
});
$("export-index").addEventListener("click", async () => {
  if (!allFullSize()) return;
  try {
    download(await labelIndexPng(exportedImage(), state().objects), `${baseName()}.labels.png`);
  } catch (error) {
    showError(error.message);
  }
});

// --- start: the last image comes back, with its objects --------------------------------------

onChange(sync);
listen();
const last = storage.load("image", null);
if (last && last.url) {
  $("image-url").value = last.url;
  openUrl(last.url);
} else {
  if (last) showProgressHint(`Open ${last.name} again to go on with its objects.`);
  checkServer();
}
