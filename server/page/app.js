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
//   editpanel.js the tools (brush.js edits a mask by hand) and the display settings
//   setexports.js the set's exports and a COCO file imported
// with session.js (the protocol), view.js, history.js, storage.js, persist.js, rle.js,
// exports.js, polygons.js and advice.js beneath them. This file ties them together: after every change
// of the state, `sync` asks, saves and shows.

import {paintLayers, render, view} from "./drawing.js";
import {changedObjects, currentEntry, restoreSet, setRecord} from "./imageset.js";
import {listenEditing, showEditing} from "./editpanel.js";
import {listen} from "./input.js";
import {listenLabels, showLabels} from "./labelpanel.js";
import {askForCurrentPrompt, askForFullSizeObjects, checkServer} from "./messages.js";
import * as persist from "./persist.js";
import {showControls, showError, showObjects} from "./panel.js";
import {prepareAhead} from "./prefetch.js";
import {listenExports, showExports} from "./setexports.js";
import {goTo, listenSet, showSet} from "./setpanel.js";
import {app, onChange} from "./state.js";
import * as storage from "./storage.js";

// After every change: ask for the current prompt's masks if nothing has
// answered or is answering them, keep the work, and show it all.
function sync() {
  askForCurrentPrompt();
  askForFullSizeObjects();
  keepSoon();
  showControls();
  showObjects();
  showLabels();
  showEditing();
  showSet();
  showExports();
  prepareAhead();
  paintLayers();
  render();
}

// The work is kept in IndexedDB a moment after each change (persist.js);
// not before the kept set has come back, which an empty one would replace.
const KEEP_MS = 0;  // the next turn: changes made together are kept together
const kept = new Map();  // entry -> the objects last kept for it
let keeping = null, restored = false, keptVersion = 0;
function keepSoon() {
  if (!restored) return;
  if (app.masksVersion !== keptVersion) {  // the open image's masks came at full size, in place: kept again
    keptVersion = app.masksVersion;
    kept.delete(currentEntry());
  }
  clearTimeout(keeping);
  keeping = setTimeout(() => {
    persist.saveSet(setRecord(view.where()), changedObjects(kept)).catch(() => {
      showError("This browser would not keep the work (its storage is full or off): export it before you leave.");
    });
  }, KEEP_MS);
}

// --- start: the set comes back, and its image with its objects -------------------------------

onChange(sync);
listen();
listenLabels();
listenEditing();
listenSet();
listenExports();
const old = storage.oldObjects();
if (old.length) persist.addObjects(old).then(() => storage.forgetOldObjects(old), () => {});
persist.loadSet().then(async (record) => {
  if (record && record.entries.length) {
    const index = await restoreSet(record, persist.loadObjects);
    restored = true;
    goTo(index);
  } else {
    restored = true;
    checkServer();
  }
});
