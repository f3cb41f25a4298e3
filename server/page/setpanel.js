// The image set beside the image: opening several images (URLs, files, a
// folder), the list of them with what each holds, and moving through them
// (F next, D previous, as in CVAT). Moving keeps the open image's work in
// its entry (imageset.js) and opens the other with its own.

import {view} from "./drawing.js";
import {
  addEntries, currentEntry, fileEntry, imageSet, isImageFile, objectsOf, remember, sourceOf, urlEntry,
} from "./imageset.js";
import {openEntry} from "./messages.js";
import {showError, showProgressHint} from "./panel.js";
import {changed} from "./state.js";

const $ = (id) => document.getElementById(id);

let opened = null;  // the entry whose image is open

export async function goTo(index) {
  const entry = imageSet.entries[index];
  if (!entry || (entry === currentEntry() && entry === opened)) return;
  remember(view.where());
  imageSet.index = index;
  let source;
  try {
    source = await sourceOf(entry);
  } catch (error) {
    showProgressHint(error.message);  // a file, after a reload: it is opened again
    changed();
    return;
  }
  if (entry !== currentEntry()) return;  // another was chosen meanwhile
  entry.display ||= entry.url || URL.createObjectURL(entry.file);
  opened = entry;
  openEntry(entry, source, entry.display);
}

export const goBy = (step) => goTo(imageSet.index + step);

// A URL, or several separated by spaces or lines: added to the set; the first is opened.
export function openUrls(text) {
  const urls = text.split(/\s+/).filter(Boolean);
  if (urls.length) goTo(addEntries(urls.map(urlEntry)));
}

// Files (chosen, dropped, or a folder's): the images among them join the set; the first is opened.
export function openFiles(files) {
  const images = [...files].filter(isImageFile);
  if (!images.length) {
    showError(files.length === 1 ? `${files[0].name} is not a PNG, JPEG or WebP image.` : "None of those files is a PNG, JPEG or WebP image.");
    return;
  }
  images.sort((a, b) => (a.webkitRelativePath || a.name).localeCompare(b.webkitRelativePath || b.name));
  goTo(addEntries(images.map(fileEntry)));
}

function describe(entry) {
  if (entry.refused) return entry.refused;
  const count = objectsOf(entry).length;
  const objects = count ? `${count} object${count === 1 ? "" : "s"}` : "no objects";
  return entry.sha256 ? objects : `${objects}, not prepared yet`;
}

let shown = "";
export function showSet() {
  const now = JSON.stringify([imageSet.index, imageSet.entries.map((entry) => [entry.name, entry.done, describe(entry)])]);
  if (now === shown) return;  // rebuilt only when it changed: a rebuild would swallow a click
  shown = now;
  $("image-set-section").hidden = imageSet.entries.length < 2;
  $("image-set").replaceChildren(...imageSet.entries.map((entry, i) => {
    const item = document.createElement("li");
    item.classList.toggle("current", i === imageSet.index);
    item.classList.toggle("done", entry.done);
    item.classList.toggle("refused", Boolean(entry.refused));
    const done = document.createElement("input");
    done.type = "checkbox";
    done.checked = entry.done;
    done.title = "done";
    done.setAttribute("aria-label", `${entry.name} is done`);
    done.addEventListener("change", () => {
      entry.done = done.checked;
      changed();
    });
    const name = document.createElement("button");
    name.type = "button";
    name.className = "name";
    name.textContent = entry.name;
    name.addEventListener("click", () => goTo(i));
    const status = document.createElement("span");
    status.className = "status";
    status.textContent = describe(entry);
    item.append(done, name, status);
    return item;
  }));
  const position = imageSet.entries.length ? `${imageSet.index + 1} of ${imageSet.entries.length}` : "";
  $("image-position").textContent = position;
  $("previous-image").disabled = imageSet.index <= 0;
  $("next-image").disabled = imageSet.index >= imageSet.entries.length - 1;
}

export function listenSet() {
  $("previous-image").addEventListener("click", () => goBy(-1));
  $("next-image").addEventListener("click", () => goBy(1));
  $("image-folder").addEventListener("change", () => openFiles($("image-folder").files));
}
