// The page's state and every change to it: the open image, its history of
// steps (the objects, the current prompt, the candidate chosen), the box
// being dragged, the selection and the settings. Nothing here touches the
// document: each change ends in `changed()`, which runs what app.js set
// with `onChange` (asking the server, saving and showing it all).

import {History} from "./history.js";
import * as storage from "./storage.js";

// A prompt is what one request asks about: points, a box, and the earlier
// mask it refines. Its answers (one per multimask setting) are attached to
// it when they arrive, so that undo and redo bring back each step's own mask.
let promptSerial = 0;
export function newPrompt({points = [], box = null, maskFrom = null} = {}) {
  return {serial: ++promptSerial, points, box, maskFrom, answers: {}};
}
export const isEmpty = (prompt) => !prompt.box && prompt.points.length === 0;

const firstStep = () => ({objects: [], prompt: newPrompt(), chosen: null});

export const app = {
  image: null,      // {name, source, element, width, height, sha256, loaded}
  session: null,
  history: new History(firstStep()),
  live: null,       // the prompt of a box being dragged: shown and asked for, not yet a step
  selected: null,   // an object's id
  savedObjects: null,
  masksVersion: 0,  // counts masks replaced in place by their full-size versions (`applyFullMasks`)
  fullMasks: new Map(),  // the full-size masks `render` answered, by their reference (`refKey`)
  token: storage.load("token", ""),
  settings: storage.load("settings", {multimask: false, polygons: false}),
};

let onChangeListener = () => {};
export function onChange(listener) {
  onChangeListener = listener;
}
export function changed() {
  onChangeListener();
}

export const state = () => app.history.current;
export const currentPrompt = () => app.live || state().prompt;
const answerKey = () => (app.settings.multimask ? "multi" : "single");
const answerOf = (prompt) => prompt.answers[answerKey()] || null;
export const hasAnswer = (prompt) => answerOf(prompt) !== null;

function bestIndex(answer) {
  return answer.candidates.reduce((best, mask, i, all) => (mask.score > all[best].score ? i : best), 0);
}

function chosenIndex(answer) {
  const chosen = app.live ? null : state().chosen;
  return chosen !== null && chosen < answer.candidates.length ? chosen : bestIndex(answer);
}

// The mask shown for the current prompt, or null while there is none.
export function currentMask() {
  const answer = answerOf(currentPrompt());
  if (!answer) return null;
  const index = chosenIndex(answer);
  return {answer, index, mask: answer.candidates[index]};
}

// A new image: an empty history, nothing dragged or selected.
export function openedImage(image) {
  Object.assign(app, {image, live: null, selected: null, savedObjects: null, history: new History(firstStep()),
                      fullMasks: new Map()});
}

// The objects this browser kept for the image come back, unless some were made already.
export function restoreObjects(saved) {
  if (!saved || !saved.length || state().objects.length !== 0) return;
  app.history = new History({...state(), objects: saved});
  app.savedObjects = saved;
}

// The server's answer to a prompt, kept with it for its multimask setting.
export function answered(prompt, multimask, result) {
  const [masks] = result.masks;
  prompt.answers[multimask ? "multi" : "single"] = {
    id: result.id, multimask, candidates: Array.isArray(masks) ? masks : [masks],
  };
  changed();
}

// The server forgot the mask a prompt refines: ask again without it.
export function forgetRefinement(prompt) {
  prompt.maskFrom = null;
  changed();
}

// --- prompts and objects: every change is one step ----------------------------------------

// Record a step. A new prompt starts with its best candidate shown.
export function step(change) {
  const now = state();
  const chosen = "prompt" in change && change.prompt !== now.prompt ? null : now.chosen;
  app.history.push({...now, chosen, ...change});
  changed();
}

function refinement(prompt) {
  const answer = answerOf(prompt);
  if (!answer) return prompt.maskFrom;
  const from = {id: answer.id, index: 0};
  if (answer.multimask) from.candidate = chosenIndex(answer);
  return from;
}

export function addPoint(x, y, label) {
  const prompt = state().prompt;
  step({prompt: newPrompt({points: [...prompt.points, {x, y, label}], box: prompt.box, maskFrom: refinement(prompt)})});
}

export function removePoint(index) {
  const prompt = state().prompt;
  step({prompt: newPrompt({points: prompt.points.filter((_, i) => i !== index), box: prompt.box})});
}

// A box being dragged is shown and asked for at once, and becomes a step when the drag ends.
export function dragBox(box) {
  if (box.width < 1 || box.height < 1) return;
  app.live = newPrompt({points: state().prompt.points, box});
  changed();
}

export function endBoxDrag() {
  const live = app.live;
  app.live = null;
  if (live) step({prompt: live});
  else changed();
}

export function clearPrompt() {
  if (isEmpty(state().prompt)) return;
  step({prompt: newPrompt()});
}

export function nextCandidate() {
  const shown = currentMask();
  if (!shown || shown.answer.candidates.length < 2) return;
  step({prompt: state().prompt, chosen: (shown.index + 1) % shown.answer.candidates.length});
}

// An answer's mask as `render` (and `mask_input`) name it.
function maskRef(shown) {
  const ref = {id: shown.answer.id, index: 0};
  if (shown.answer.multimask) ref.candidate = shown.index;
  return ref;
}
export const refKey = (ref) => JSON.stringify([ref.id, ref.index, ref.candidate ?? null]);

// Whether a mask is at the image's full size (masks are asked at the canvas's size, objects then at full size).
export function isFullSize(mask) {
  const [height, width] = mask.segmentation.size;
  return Boolean(app.image) && height === app.image.height && width === app.image.width;
}

// The full-size mask of an accepted object (`render`'s answer), kept for whichever step shows the object.
export function renderedFull(ref, full) {
  app.fullMasks.set(refKey(ref), full);
  applyFullMasks();
}

// Each object of the current step whose full-size mask has come takes it in place of the one drawn at the
// canvas's size: every step of the history that holds the object shares that mask.
export function applyFullMasks() {
  let replaced = false;
  for (const object of state().objects) {
    const full = object.ref && app.fullMasks.get(refKey(object.ref));
    if (!full || isFullSize(object.mask)) continue;
    Object.assign(object.mask, {segmentation: full.segmentation, area: full.area, bbox: full.bbox});
    if (full.polygons) object.mask.polygons = full.polygons;
    else delete object.mask.polygons;
    replaced = true;
  }
  if (!replaced) return;
  app.masksVersion += 1;
  app.savedObjects = null;  // saved again, at full size
  changed();
}

let objectSerial = 0;
export function accept(labelText) {
  const shown = currentMask();
  if (!shown || app.live) return;
  const label = labelText.trim() || "object";
  storage.save("label", label);
  const objects = state().objects;
  const colour = objects.length ? Math.max(...objects.map((object) => object.colour)) + 1 : 0;
  const object = {id: `${Date.now().toString(36)}-${++objectSerial}`, label, colour, hidden: false,
                  mask: shown.mask, request: shown.answer.id, ref: maskRef(shown)};
  app.selected = object.id;
  step({objects: [...objects, object], prompt: newPrompt()});
}

export function changeObject(id, change) {
  step({objects: state().objects.map((object) => (object.id === id ? {...object, ...change} : object))});
}

export function deleteObject(id) {
  if (app.selected === id) app.selected = null;
  step({objects: state().objects.filter((object) => object.id !== id)});
}

export function toggleHidden(id) {
  const object = state().objects.find((o) => o.id === id);
  if (object) changeObject(object.id, {hidden: !object.hidden});
}

export function undo() {
  app.history.undo();
  changed();
}

export function redo() {
  app.history.redo();
  changed();
}

// --- settings, kept in this browser -------------------------------------------------------

export function toggleMultimask() {
  app.settings = {...app.settings, multimask: !app.settings.multimask};
  storage.save("settings", app.settings);
  changed();
}

export function setPolygons(polygons) {
  app.settings = {...app.settings, polygons};
  storage.save("settings", app.settings);
}

export function setToken(token) {
  app.token = token;
  storage.save("token", token);
}
