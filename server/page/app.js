// The page: open a set of images, click and drag prompts on them, accept
// masks as objects of the project's labels, export them. See README, "The page".
//
// The modules, by concern (plain ES modules, no build step):
//   state.js     the state and every change to it (no document access)
//   input.js     mouse, keys, dropped files and the controls: changes of the state
//   messages.js  the image's session with the server: asking, and what it answers
//   drawing.js   the image, the masks and the prompt on the canvas
//   panel.js     the controls' state, the objects list and the footer's sentences
//   setpanel.js  the image set: opening, its list, moving through it (imageset.js holds it,
//                prefetch.js prepares the next image)
//   labelpanel.js the label set (labels.js holds it)
//   setexports.js the set's exports and a COCO file imported
// with session.js (the protocol), view.js, history.js, storage.js, rle.js,
// exports.js, polygons.js and advice.js beneath them. This file ties them together: after every change
// of the state, `sync` asks, saves and shows.

import {paintLayers, render} from "./drawing.js";
import {listen} from "./input.js";
import {listenLabels, showLabels} from "./labelpanel.js";
import {askForCurrentPrompt, checkServer} from "./messages.js";
import {showControls, showError, showObjects, showProgressHint} from "./panel.js";
import {prepareAhead} from "./prefetch.js";
import {listenExports, showExports} from "./setexports.js";
import {listenSet, openUrls, showSet} from "./setpanel.js";
import {app, onChange, state} from "./state.js";
import * as storage from "./storage.js";

const $ = (id) => document.getElementById(id);

// After every change: ask for the current prompt's masks if nothing has
// answered or is answering them, save the objects, and show it all.
function sync() {
  askForCurrentPrompt();
  saveObjects();
  showControls();
  showObjects();
  showLabels();
  showSet();
  showExports();
  prepareAhead();
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

// --- start: the last image comes back, with its objects --------------------------------------

onChange(sync);
listen();
listenLabels();
listenSet();
listenExports();
const last = storage.load("image", null);
if (last && last.url) {
  $("image-url").value = last.url;
  openUrls(last.url);
} else {
  if (last) showProgressHint(`Open ${last.name} again to go on with its objects.`);
  checkServer();
}
