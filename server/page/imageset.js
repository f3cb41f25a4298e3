// The image set: the images opened together, in order. Each entry keeps its
// own history of steps, selection and view while another image is open, and
// what the server said of it (its SHA-256 and size once prepared, or why it
// was refused). Nothing here touches the document.

import {app, state} from "./state.js";

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp"];

export const imageSet = {entries: [], index: -1};

export const currentEntry = () => imageSet.entries[imageSet.index] || null;

// entry: {name, url} for an image on the web, {name, file} for a local one.
function newEntry(fields) {
  return {sha256: null, width: 0, height: 0, history: null, selected: null, view: null, done: false,
          refused: null, savedObjects: null, ...fields};
}

export const urlEntry = (url) => newEntry({
  name: decodeURIComponent(new URL(url, location.href).pathname.split("/").pop() || "image"), url,
});

export const namedEntry = (name) => newEntry({name});  // known by name only, until its file is opened

export const isImageFile = (file) => IMAGE_TYPES.includes(file.type);
export const fileEntry = (file) => newEntry({name: file.name, file});  // by its name, wherever it is opened from

const sameImage = (a, b) => (a.url || b.url ? a.url === b.url
  : a.name === b.name && (!a.file || !b.file || a.file.size === b.file.size));

// Add entries after the last; one already in the set (same URL, or same file
// name and size) is not added twice. Returns the index of the first given.
export function addEntries(entries) {
  let first = -1;
  for (const entry of entries) {
    let at = imageSet.entries.findIndex((other) => sameImage(entry, other));
    if (at >= 0 && entry.file && !imageSet.entries[at].file) imageSet.entries[at].file = entry.file;  // reopened
    if (at < 0) {
      imageSet.entries.push(entry);
      at = imageSet.entries.length - 1;
    }
    if (first < 0) first = at;
  }
  return first;
}

// What the server reads: the URL, or the file as a data: URL.
export function sourceOf(entry) {
  if (entry.url) return Promise.resolve(entry.url);
  if (!entry.file) return Promise.reject(new Error(`Open ${entry.name} again to go on with its objects.`));
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`This browser could not read ${entry.name}.`));
    reader.readAsDataURL(entry.file);
  });
}

// The objects of an entry: the open image's current step, or the entry's own.
export function objectsOf(entry) {
  if (entry === currentEntry() && app.image) return state().objects;
  if (entry.history) return entry.history.current.objects;
  return entry.savedObjects || [];
}

// The open image's work goes back into its entry before another is opened.
export function remember(view) {
  const entry = currentEntry();
  if (!entry || !app.image) return;
  Object.assign(entry, {history: app.history, selected: app.selected, view});
}

// --- what a reload brings back (persist.js keeps it) -----------------------------------------

// The set as IndexedDB keeps it: no files (a file is opened again), no
// history (its current step's objects are kept); objects of an image the
// server has named are kept by its hash, the others with their entry.
export function setRecord(currentView) {
  return {
    index: imageSet.index,
    entries: imageSet.entries.map((entry) => ({
      name: entry.name, url: entry.url || null, sha256: entry.sha256, width: entry.width, height: entry.height,
      done: entry.done, view: entry === currentEntry() ? currentView : entry.view,
      objects: entry.sha256 ? null : objectsOf(entry),
    })),
  };
}

// The objects to keep by hash that changed since `kept` (entry -> objects)
// last saw them. None is written for an image that never had any here, so
// that opening it never hides the objects another set kept for it.
export function changedObjects(kept) {
  const changed = [];
  for (const entry of imageSet.entries) {
    const objects = objectsOf(entry);
    if (!kept.has(entry) && !objects.length) continue;
    if (entry.sha256 && kept.get(entry) !== objects) {
      kept.set(entry, objects);
      changed.push([entry.sha256, objects]);
    }
  }
  return changed;
}

// A kept set comes back; `objectsBy(sha256)` gives the objects kept by hash.
export async function restoreSet(record, objectsBy) {
  imageSet.entries = await Promise.all(record.entries.map(async ({objects, url, ...kept}) => newEntry({
    ...kept, ...(url ? {url} : {}), savedObjects: kept.sha256 ? await objectsBy(kept.sha256) : objects,
  })));
  return Math.max(0, Math.min(record.index, imageSet.entries.length - 1));
}
