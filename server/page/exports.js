// What the page saves: a COCO file, one PNG per object, one label-index PNG.
// Every mask is the one the server sent, as it sent it: the RLE string goes
// into the COCO file untouched, and the PNGs are its decoding. Category ids
// are the label set's (labels.js), the same in every export.

import {categories} from "./labels.js";
import {outerRings} from "./polygons.js";
import {maskPixels} from "./rle.js";
import {grayPng} from "./files.js";

// An object's segmentation for the COCO file: its RLE, or with `polygons`
// its outer rings, traced now from the mask (whenever it was asked for).
function segmentationOf(object, polygons) {
  if (!polygons) return object.mask.segmentation;
  const [height, width] = object.mask.segmentation.size;
  return outerRings(maskPixels(object.mask.segmentation), width, height);
}

// images: [{image: {name, width, height, sha256}, objects}], one per image of the set.
export function cocoDocument(images, {polygons = false} = {}) {
  const cats = categories();
  const categoryId = new Map(cats.map((category) => [category.name, category.id]));
  const annotations = [];
  for (const [i, {objects}] of images.entries()) {
    for (const object of objects) {
      annotations.push({
        id: annotations.length + 1,
        image_id: i + 1,
        category_id: categoryId.get(object.label),
        segmentation: segmentationOf(object, polygons),
        area: object.mask.area,
        bbox: object.mask.bbox,
        score: object.mask.score,
        iscrowd: 0,
      });
    }
  }
  return {
    info: {description: "Annotated with CAP", date_created: new Date().toISOString()},
    images: images.map(({image}, i) => ({id: i + 1, file_name: image.name, width: image.width, height: image.height,
                                         sha256: image.sha256})),
    categories: cats,
    annotations,
  };
}

export const fileSafe = (text) => text.replace(/[^\p{L}\p{N}._-]+/gu, "_").slice(0, 60) || "object";

// One PNG per object: 255 on the mask, 0 elsewhere; `folder` names them for a set's ZIP.
export async function objectPngs(objects, folder = "") {
  const files = [];
  for (const [i, object] of objects.entries()) {
    const [height, width] = object.mask.segmentation.size;
    const pixels = maskPixels(object.mask.segmentation).map((on) => on * 255);
    files.push({name: `${folder}${String(i + 1).padStart(3, "0")}-${fileSafe(object.label)}.png`,
                bytes: await grayPng(pixels, width, height)});
  }
  return files;
}

// One PNG whose pixel values are category ids; where objects overlap, the later one wins.
export async function labelIndexPng(image, objects) {
  const ids = new Map(categories().map((category) => [category.name, category.id]));
  if (Math.max(0, ...ids.values()) > 255) throw new Error("a label-index PNG holds label ids up to 255 only");
  const pixels = new Uint8Array(image.width * image.height);
  for (const object of objects) {
    const id = ids.get(object.label);
    const mask = maskPixels(object.mask.segmentation);
    for (let p = 0; p < mask.length; p++) if (mask[p]) pixels[p] = id;
  }
  return grayPng(pixels, image.width, image.height);
}

// A COCO file's objects, per image: [{image: {file_name, sha256}, objects}]; RLE
// segmentations only (polygons cannot give back the exact mask). Its
// categories join the label set first (labels.js importLabels).
export function cocoObjects(document_) {
  const names = new Map((document_.categories || []).map((category) => [category.id, category.name]));
  let serial = 0, skipped = 0;
  const images = (document_.images || []).map((image) => ({image, objects: []}));
  const byId = new Map(images.map((entry) => [entry.image.id, entry]));
  for (const annotation of document_.annotations || []) {
    const entry = byId.get(annotation.image_id), segmentation = annotation.segmentation;
    if (!entry || !segmentation || typeof segmentation.counts !== "string") {
      skipped += 1;
      continue;
    }
    entry.objects.push({
      id: `coco-${Date.now().toString(36)}-${++serial}`, label: names.get(annotation.category_id) || "object",
      hidden: false, request: null,
      mask: {segmentation, area: annotation.area, bbox: annotation.bbox, score: annotation.score ?? 1},
    });
  }
  return {images, skipped};
}
