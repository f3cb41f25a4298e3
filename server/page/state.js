// The page's state and every change to it: the open image, its history of
// steps (the objects, the current prompt, the candidate chosen), the box
// being dragged, the selection and the settings. Nothing here touches the
// document: each change ends in `changed()`, which runs what app.js set
// with `onChange` (asking the server, saving and showing it all).

import {History} from "./history.js";
import {ensureLabel} from "./labels.js";
import * as storage from "./storage.js";

// A prompt is what one request asks about: points, a box, and the earlier
// mask it refines. Its answers (one per multimask setting) are attached to
// it when they arrive, so that undo and redo bring back each step's own mask.
let promptSerial = 0;
export function newPrompt({points = [], box = null, maskFrom = null} = {}) {
  return {serial: ++promptSerial, points, box, maskFrom, answers: {}};
}
export const isEmpty = (prompt) => !prompt.box && prompt.points.length === 0;

// editing: the id of the object the prompt refines (its Accept replaces that object's mask), or null.
const firstStep = () => ({objects: [], prompt: newPrompt(), chosen: null, editing: null});

export const app = {
  image: null,      // {name, source, element, width, height, sha256, loaded}
  session: null,
  history: new History(firstStep()),
  live: null,       // the prompt of a box being dragged: shown and asked for, not yet a step
  selected: null,   // an object's id
  acceptOnAnswer: null,  // {prompt, label}: Enter came before the prompt's mask; accepted when it comes
  masksVersion: 0,  // counts masks replaced in place by their full-size versions (`applyFullMasks`)
  fullMasks: new Map(),  // the open image's full-size masks `render` answered, by their reference (`refKey`)
  token: storage.load("token", ""),
  // opacity: the objects' fill alpha (0 to 255); outlines: their edges drawn opaque; hideAll: none drawn.
  settings: {multimask: false, polygons: false, opacity: 140, outlines: false, hideAll: false,
             ...storage.load("settings", {})},
};

let onChangeListener = () => {};
export function onChange(listener) {
  onChangeListener = listener;
}
export function changed() {
  onChangeListener();
}

export const state = () => app.history.current;
// The open image can be worked on: the browser shows it and the server did not refuse it.
export const usable = () => Boolean(app.image && app.image.loaded && !app.image.refused);
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

// An image opened: its own history and selection (of the image set), or an empty history; nothing dragged.
export function openedImage(image, history = null, selected = null) {
  Object.assign(app, {image, live: null, selected, acceptOnAnswer: null,
                      history: history || new History(firstStep()), fullMasks: new Map()});
}

// The objects this browser kept for the image come back, unless some were made already.
export function restoreObjects(saved) {
  if (!saved || !saved.length || state().objects.length !== 0) return;
  app.history = new History({...state(), objects: saved});
  changed();
}

// The server's answer to a prompt, kept with it for its multimask setting.
export function answered(prompt, multimask, result) {
  const [masks] = result.masks;
  prompt.answers[multimask ? "multi" : "single"] = {
    id: result.id, multimask, candidates: Array.isArray(masks) ? masks : [masks],
  };
  const waiting = app.acceptOnAnswer;
  if (waiting && waiting.prompt === state().prompt && currentMask()) accept(waiting.label);
  else changed();
}

// The request an accept waited for failed: the accept is off (the error says why).
export function acceptFailed(prompt) {
  if (app.acceptOnAnswer && app.acceptOnAnswer.prompt === prompt) app.acceptOnAnswer = null;
}

// The server forgot the mask a prompt refines: ask again without it.
export function forgetRefinement(prompt) {
  prompt.maskFrom = null;
  changed();
}

// --- prompts and objects: every change is one step ----------------------------------------

// Record a step. A new prompt starts with its best candidate shown.
export function step(change) {
  if (app.acceptOnAnswer && "prompt" in change) return;  // an accept waits for this prompt's mask
  const now = state();
  const chosen = "prompt" in change && change.prompt !== now.prompt ? null : now.chosen;
  app.history.push({...now, chosen, ...change});
  changed();
}

function refinement(prompt) {
  const answer = answerOf(prompt);
  if (!answer) return prompt.maskFrom;
  if (answer.from) return answer.from;  // an accepted object's mask, as the server named it
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
  if (box.width < 1 || box.height < 1 || app.acceptOnAnswer) return;
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
  if (isEmpty(state().prompt) && !state().editing) return;
  step({prompt: newPrompt(), editing: null});
}

// Refine an accepted object with more clicks: its prompt comes back with its
// mask shown as the answer, so the next click refines that mask (mask_input).
export function refineObject(id) {
  const object = state().objects.find((o) => o.id === id);
  if (!object || !object.from) return;
  const prompt = newPrompt({points: object.points, box: object.box});
  prompt.answers[answerKey()] = {id: object.from.id, multimask: false, candidates: [object.mask], from: object.from};
  step({prompt, editing: id});
}

export function nextCandidate() {
  const shown = currentMask();
  if (!shown || shown.answer.candidates.length < 2) return;
  step({prompt: state().prompt, chosen: (shown.index + 1) % shown.answer.candidates.length});
}

// An object's `from` ({id, index, candidate?}, as `mask_input` and `render` name a mask) as a map key.
export const refKey = (ref) => JSON.stringify([ref.id, ref.index, ref.candidate ?? null]);

// Whether a mask is at its image's full size (masks are asked at the canvas's size, objects then at full size).
export function isFullSize(mask, image = app.image) {
  const [height, width] = mask.segmentation.size;
  return Boolean(image) && height === image.height && width === image.width;
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
    const full = object.from && app.fullMasks.get(refKey(object.from));
    if (!full || isFullSize(object.mask)) continue;
    Object.assign(object.mask, {segmentation: full.segmentation, area: full.area, bbox: full.bbox});
    replaced = true;
  }
  if (!replaced) return;
  app.masksVersion += 1;  // drawn and kept again, at full size
  changed();
}

// Accept the current mask as an object. Pressed while its mask is on its way,
// the accept waits for it, and the prompt stays as it is until then.
let objectSerial = 0;
export function accept(labelText) {
  const shown = currentMask();
  if (app.live) return;
  app.acceptOnAnswer = null;
  if (!shown) {
    if (!isEmpty(state().prompt)) app.acceptOnAnswer = {prompt: state().prompt, label: labelText};
    changed();
    return;
  }
  const {objects, prompt, editing} = state();
  const made = {mask: shown.mask, request: shown.answer.id, from: refinement(prompt), points: prompt.points, box: prompt.box};
  if (editing && objects.some((o) => o.id === editing)) {  // a refined object keeps its label
    step({objects: objects.map((o) => (o.id === editing ? {...o, ...made} : o)), prompt: newPrompt(), editing: null});
    return;
  }
  const label = labelText.trim() || "object";
  storage.save("label", label);
  ensureLabel(label);
  const object = {id: `${Date.now().toString(36)}-${++objectSerial}`, label, hidden: false, ...made};
  app.selected = object.id;
  step({objects: [...objects, object], prompt: newPrompt(), editing: null});
}

// Segment everything's masks: unlabelled objects, each to accept (with a label), relabel or delete.
export function propose(masks, request) {
  const objects = state().objects;
  let colour = objects.length ? Math.max(...objects.map((object) => object.colour)) + 1 : 0;
  const found = masks.map((mask) => ({id: `${Date.now().toString(36)}-${++objectSerial}`, label: "", colour: colour++,
                                      hidden: false, proposed: true, mask, request}));
  if (found.length) step({objects: [...objects, ...found]});
}

export function acceptObject(id, labelText) {
  const label = labelText.trim() || "object";
  storage.save("label", label);
  changeObject(id, {label, proposed: false});
}

// What is exported: the objects a person made or accepted.

export function changeObject(id, change) {
  if (change.label) ensureLabel(change.label);
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
  app.acceptOnAnswer = null;
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

export function setDisplay(change) {
  app.settings = {...app.settings, ...change};
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
