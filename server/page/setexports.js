// Exports of the whole image set, and a COCO file imported back: one COCO
// file for every image the server has prepared, the PNG forms per image (in
// a ZIP when the set has several), and a COCO file's objects restored to
// the images it names (by SHA-256, else by file name).

import {cocoDocument, cocoObjects, fileSafe, labelIndexPng, objectPngs} from "./exports.js";
import {zipArchive} from "./files.js";
import {History} from "./history.js";
import {addEntries, currentEntry, imageSet, namedEntry, objectsOf} from "./imageset.js";
import {importLabels} from "./labels.js";
import {showError, showProgressHint} from "./panel.js";
import {app, changed, isFullSize, newPrompt, state, step} from "./state.js";

const $ = (id) => document.getElementById(id);

function download(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

const baseName = (name) => name.replace(/\.[^.]*$/, "") || "image";

// The images to export: those the server has read (their size and hash are known), with their objects
// (not those proposed by Everything and not yet accepted).
function exported() {
  return imageSet.entries.filter((entry) => entry.sha256 && entry.width).map((entry) => ({
    image: {name: entry.name, width: entry.width, height: entry.height, sha256: entry.sha256},
    objects: objectsOf(entry).filter((object) => !object.proposed),
  }));
}

// The exports are of full-size masks only: an object accepted a moment ago may still have the one drawn at
// the canvas's size, its full-size one on its way (`render`). Says so, and which images wait, if any does.
function allFullSize(images) {
  const waiting = images.filter(({image, objects}) => objects.some((object) => !isFullSize(object.mask, image)));
  if (!waiting.length) return true;
  const open = waiting.filter(({image}) => image.sha256 === app.image?.sha256).length;
  const names = waiting.map(({image}) => image.name).join(", ");
  showError(`Full-size masks are still on their way for ${names}: ${open === waiting.length
    ? "export again in a moment." : "open each image named again to fetch them, then export."}`);
  return false;
}

// One image: named after it, as the single-image files always were; several: one name for the set.
const single = (images) => (images.length === 1 ? baseName(images[0].image.name) : null);

async function exportCoco() {
  const images = exported();
  if (!allFullSize(images)) return;
  const json = JSON.stringify(cocoDocument(images, {polygons: app.settings.polygons}));
  download(new Blob([json], {type: "application/json"}), `${single(images) || "images"}.coco.json`);
}

async function exportPngs() {
  const images = exported(), one = single(images);
  if (!allFullSize(images)) return;
  const files = [];
  for (const {image, objects} of images) files.push(...await objectPngs(objects, one ? "" : `${fileSafe(baseName(image.name))}/`));
  download(zipArchive(files), `${one || "images"}.masks.zip`);
}

async function exportIndex() {
  const images = exported(), one = single(images);
  if (!allFullSize(images)) return;
  try {
    const pngs = [];
    for (const {image, objects} of images) {
      pngs.push({name: `${fileSafe(baseName(image.name))}.labels.png`, bytes: await labelIndexPng(image, objects)});
    }
    if (one) download(new Blob([pngs[0].bytes], {type: "image/png"}), `${one}.labels.png`);
    else download(zipArchive(pngs), "images.labels.zip");
  } catch (error) {
    showError(error.message);
  }
}

// A COCO file's objects join the images' own; an image not in the set joins it, to be opened again.
async function importCoco(file) {
  let document_;
  try {
    document_ = JSON.parse(await file.text());
    if (document_.categories) importLabels(JSON.stringify(document_.categories));
  } catch (error) {
    showError(`${file.name} is not a COCO file: ${error.message}`);
    return;
  }
  const {images, skipped} = cocoObjects(document_);
  let restored = 0;
  for (const {image, objects} of images) {
    let entry = imageSet.entries.find((other) => image.sha256 && other.sha256 === image.sha256)
      || imageSet.entries.find((other) => other.name === image.file_name);
    if (!entry) entry = imageSet.entries[addEntries([namedEntry(image.file_name)])];
    restored += objects.length;
    if (entry === currentEntry() && app.image) {
      step({objects: [...state().objects, ...objects]});
    } else {
      entry.history = new History({objects: [...objectsOf(entry), ...objects], prompt: newPrompt(), chosen: null});
    }
  }
  showProgressHint(`${restored} objects restored from ${file.name}${skipped ? `; ${skipped} without an RLE mask were left out` : ""}.`);
  changed();
}

// The exports are there once an image the server has read holds an object.
export function showExports() {
  const none = !exported().some(({objects}) => objects.length);
  for (const id of ["export-coco", "export-pngs", "export-index"]) $(id).disabled = none;
}

export function listenExports() {
  $("export-coco").addEventListener("click", exportCoco);
  $("export-pngs").addEventListener("click", exportPngs);
  $("export-index").addEventListener("click", exportIndex);
  $("import-coco").addEventListener("change", async () => {
    const file = $("import-coco").files[0];
    if (file) await importCoco(file);
    $("import-coco").value = "";
  });
}
