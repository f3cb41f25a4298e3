// Drawing: the image, the objects' masks, the current mask and the current
// prompt on the view's canvas. The masks are painted into two layers of the
// image's size when the state changes, and drawn through the view's
// transform at the next animation frame.

import {strokeUnderWay} from "./brush.js";
import {colourOfLabel} from "./labels.js";
import {maskPixels} from "./rle.js";
import {app, currentMask, currentPrompt, isEmpty, state, usable} from "./state.js";
import {View} from "./view.js";

// The current mask's colour and the points' (objects have their label's colour, labels.js).
const CURRENT = [30, 144, 255];
const POSITIVE = "rgb(40, 200, 60)", NEGATIVE = "rgb(230, 40, 40)";
const MASK_ALPHA = 140, SELECTED_EXTRA = 80;  // the current mask's alpha; a selected object's, over the fill opacity

export const canvas = document.getElementById("view");
export const view = new View(canvas);
// The mask layers, in image pixels (hidden canvases of index.html).
const objectsLayer = document.getElementById("objects-layer"), currentLayer = document.getElementById("current-layer");

export const colourOf = (object) => colourOfLabel(object.label);

// The masks' scale the canvas shows: its pixels per image pixel, at most 1 (full size).
export function canvasScale() {
  const scale = view.scale * (window.devicePixelRatio || 1);
  return scale > 0 && scale < 1 ? Math.ceil(scale * 1000) / 1000 : 1;
}

// A mask's pixels at width × height: its own, or stretched there pixel by nearest pixel (a mask asked at
// the canvas's size, painted into a layer of the image's size).
function pixelsAt(mask, [maskHeight, maskWidth], width, height) {
  if (maskWidth === width && maskHeight === height) return mask;
  const columns = Uint32Array.from({length: width}, (_, x) => Math.floor((x * maskWidth) / width));
  const stretched = new Uint8Array(width * height);
  for (let y = 0, p = 0; y < height; y++) {
    const row = Math.floor((y * maskHeight) / height) * maskWidth;
    for (let x = 0; x < width; x++, p++) stretched[p] = mask[row + columns[x]];
  }
  return stretched;
}

// Paint masks into a layer of width × height: each its colour, later ones on
// top; with `outline`, a mask's edge pixels opaque. A mask is its
// segmentation, or the `pixels` of a brush stroke under way (at the segmentation's size).
function paintLayer(layer, width, height, masks, outline = false) {
  if (layer.width !== width || layer.height !== height) Object.assign(layer, {width, height});
  const context = layer.getContext("2d");
  if (!masks.length) {
    context.clearRect(0, 0, width, height);
    return;
  }
  const pixels = new ImageData(width, height), data = pixels.data;
  for (const {segmentation, pixels: painted, colour, alpha} of masks) {
    const mask = pixelsAt(painted || maskPixels(segmentation), segmentation.size, width, height);
    const [r, g, b] = colour;
    for (let p = 0; p < mask.length; p++) {
      if (!mask[p]) continue;
      const x = p % width;
      const edge = outline && (x === 0 || x === width - 1 || !mask[p - 1] || !mask[p + 1] || !mask[p - width] || !mask[p + width]);
      if (!edge && !alpha) continue;
      data[4 * p] = r;
      data[4 * p + 1] = g;
      data[4 * p + 2] = b;
      data[4 * p + 3] = edge ? 255 : alpha;
    }
  }
  context.putImageData(pixels, 0, 0);
}

let paintedObjects = null, paintedSelected = null, paintedDisplay = null, paintedVersion = 0, paintedMask = null;
let waiting = false;

// A new image starts with empty layers: nothing painted for another image is ever shown over it.
export function clearLayers() {
  paintedObjects = paintedSelected = paintedMask = null;
  for (const layer of [objectsLayer, currentLayer]) layer.getContext("2d").clearRect(0, 0, layer.width, layer.height);
  currentLayer.dataset.answer = "";
}

// The layers change with the state, at once (the view draws them at its next frame).
export function paintLayers() {
  const image = app.image, objects = state().objects;
  if (!image || !image.width) return;
  const {opacity, outlines, hideAll} = app.settings, editing = state().editing;
  const display = `${opacity} ${outlines} ${hideAll} ${editing}`;
  const stroke = strokeUnderWay();
  if (objects !== paintedObjects || app.selected !== paintedSelected || display !== paintedDisplay
      || app.masksVersion !== paintedVersion || stroke) {
    paintedObjects = objects;
    paintedSelected = app.selected;
    paintedDisplay = display;
    paintedVersion = app.masksVersion;
    const shown = hideAll ? [] : objects.filter((object) => !object.hidden && object.id !== editing);  // one refined is the current mask
    paintLayer(objectsLayer, image.width, image.height, shown.map((object) => ({
      segmentation: object.mask.segmentation, colour: colourOf(object),
      pixels: stroke && stroke.object.id === object.id ? stroke.pixels : null,
      alpha: object.id === app.selected ? Math.min(255, opacity + SELECTED_EXTRA) : opacity,
    })), outlines);
  }
  // The current mask stays until the next one arrives (dimmed meanwhile), or the prompt is cleared.
  const shown = currentMask();
  const mask = shown ? shown.mask : isEmpty(currentPrompt()) ? null : paintedMask;
  if (mask !== paintedMask) {
    paintedMask = mask;
    const [height, width] = mask ? mask.segmentation.size : [image.height, image.width];  // at the mask's own size
    paintLayer(currentLayer, width, height,
               mask ? [{segmentation: mask.segmentation, colour: CURRENT, alpha: MASK_ALPHA}] : []);
    currentLayer.dataset.answer = shown ? `${shown.answer.id}:${shown.index}` : "";
  }
  waiting = Boolean(mask) && !shown;
}

let frame = null;
export function render() {
  if (frame === null) frame = requestAnimationFrame(draw);
}

function draw() {
  frame = null;
  view.resize();
  const context = canvas.getContext("2d");
  view.screenTransform(context);
  context.clearRect(0, 0, canvas.clientWidth, canvas.clientHeight);
  const image = app.image;
  if (!usable()) return;
  view.imageTransform(context);
  context.imageSmoothingEnabled = view.scale < 1;  // image pixels show as squares when zoomed in
  context.drawImage(image.element, 0, 0, image.width, image.height);
  context.drawImage(objectsLayer, 0, 0);
  context.globalAlpha = waiting ? 0.4 : 1;
  context.drawImage(currentLayer, 0, 0, image.width, image.height);  // stretched: it may be at the canvas's size
  context.globalAlpha = 1;
  view.screenTransform(context);
  drawPrompt(context, currentPrompt());
}

function drawPrompt(context, prompt) {
  if (prompt.box) {
    const [x0, y0] = view.toScreen(prompt.box.x, prompt.box.y);
    const [x1, y1] = view.toScreen(prompt.box.x + prompt.box.width, prompt.box.y + prompt.box.height);
    context.lineWidth = 2;
    context.strokeStyle = "#fff";
    context.strokeRect(x0, y0, x1 - x0, y1 - y0);
    context.setLineDash([6, 4]);
    context.strokeStyle = "#000";
    context.strokeRect(x0, y0, x1 - x0, y1 - y0);
    context.setLineDash([]);
    context.fillStyle = "#fff";
    for (const [x, y] of [[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) context.fillRect(x - 4, y - 4, 8, 8);
  }
  for (const point of prompt.points) {
    const [x, y] = view.toScreen(point.x, point.y);
    context.beginPath();
    context.arc(x, y, 6, 0, 2 * Math.PI);
    context.fillStyle = point.label ? POSITIVE : NEGATIVE;
    context.fill();
    context.lineWidth = 2;
    context.strokeStyle = "#fff";
    context.stroke();
  }
}

// The view follows the canvas's size, the image fitted to it.
new ResizeObserver(() => {
  view.resize();
  if (app.image && view.imageWidth) view.fit();
  render();
}).observe(canvas);
