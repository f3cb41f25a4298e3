// The project's label set: each label has a stable id (its COCO category id,
// the same in every export) and a colour, and the digit keys 1 to 9 pick the
// first nine. It is defined once: typed, or imported as a list (one name a
// line, a JSON list of names, or COCO `categories`). A label typed for an
// object joins the set with the next free id. Kept in this browser.

import * as storage from "./storage.js";

// The labels' colours, in id order (the command-line client uses the same ones).
const COLOURS = [
  [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [0, 128, 128], [170, 110, 40],
];

let labels = storage.load("labels", []);  // [{id, name}], in the order they are shown

export const labelSet = () => labels;

export const labelOf = (name) => labels.find((label) => label.name === name) || null;

export function colourOfLabel(name) {
  const label = labelOf(name);
  return COLOURS[((label ? label.id : 1) - 1) % COLOURS.length];
}

function keep(changed) {
  labels = changed;
  storage.save("labels", labels);
}

// The label of that name, added to the set if it is new.
export function ensureLabel(name) {
  const found = labelOf(name);
  if (found) return found;
  const label = {id: labels.reduce((most, other) => Math.max(most, other.id), 0) + 1, name};
  keep([...labels, label]);
  return label;
}

// A list's labels as [{id?, name}]: COCO categories, a JSON list of names, or one name a line.
export function parseLabelList(text) {
  let parsed = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  if (parsed && !Array.isArray(parsed) && Array.isArray(parsed.categories)) parsed = parsed.categories;
  const items = Array.isArray(parsed) ? parsed : text.split(/\r?\n/);
  return items.map((item) => (typeof item === "string" ? {name: item.trim()} : {id: item.id, name: String(item.name).trim()}))
    .filter((item) => item.name);
}

// Labels of a list join the set: the ones it has keep their ids; a new one
// takes the id the list gives it when that id is free, else the next one.
export function importLabels(text) {
  const listed = parseLabelList(text);
  if (!listed.length) throw new Error("That list names no labels: give one name a line, or a JSON list of names.");
  let next = [...labels];
  for (const {id, name} of listed) {
    if (next.some((label) => label.name === name)) continue;
    const free = Number.isInteger(id) && id > 0 && !next.some((label) => label.id === id);
    next = [...next, {id: free ? id : next.reduce((most, other) => Math.max(most, other.id), 0) + 1, name}];
  }
  keep(next);
  return listed.length;
}

// COCO categories: the whole set, by id.
export const categories = () => [...labels].sort((a, b) => a.id - b.id)
  .map(({id, name}) => ({id, name, supercategory: ""}));
