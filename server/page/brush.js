// Editing an accepted object's mask by hand: the brush adds pixels, the
// eraser takes them away. A stroke paints discs along the pointer's path
// into a copy of the mask; when it ends the mask is encoded (COCO RLE, with
// its area and box) and replaces the object's as one step, so undo takes
// the stroke back.

import {encodeRle, maskPixels} from "./rle.js";

export const tools = {current: "prompt", size: 12};  // "prompt", "brush" or "eraser"; size in screen pixels

let stroke = null;  // {object, pixels, width, height, value, last}

export function startStroke(object) {
  const [height, width] = object.mask.segmentation.size;
  stroke = {object, pixels: maskPixels(object.mask.segmentation).slice(), width, height,
            value: tools.current === "brush" ? 1 : 0, last: null};
  return stroke;
}

// Paint a disc of `radius` image pixels at (x, y), and along the way from the last one.
function disc(cx, cy, radius) {
  const {pixels, width, height, value} = stroke;
  const r2 = radius * radius;
  for (let y = Math.max(0, Math.floor(cy - radius)); y <= Math.min(height - 1, Math.ceil(cy + radius)); y++) {
    for (let x = Math.max(0, Math.floor(cx - radius)); x <= Math.min(width - 1, Math.ceil(cx + radius)); x++) {
      if ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= r2) pixels[y * width + x] = value;
    }
  }
}

export function strokeTo(x, y, radius) {
  if (!stroke) return;
  const [lx, ly] = stroke.last || [x, y];
  const steps = Math.max(1, Math.ceil(Math.hypot(x - lx, y - ly) / Math.max(radius / 2, 0.5)));
  for (let i = 1; i <= steps; i++) disc(lx + ((x - lx) * i) / steps, ly + ((y - ly) * i) / steps, radius);
  stroke.last = [x, y];
}

export const strokeUnderWay = () => stroke;

// The edited mask, as the server's masks are: {segmentation, area, bbox, score}; null if none was under way.
export function endStroke() {
  if (!stroke) return null;
  const {object, pixels, width, height} = stroke;
  stroke = null;
  let area = 0, x0 = width, y0 = height, x1 = -1, y1 = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (!pixels[y * width + x]) continue;
      area += 1;
      x0 = Math.min(x0, x);
      x1 = Math.max(x1, x);
      y0 = Math.min(y0, y);
      y1 = Math.max(y1, y);
    }
  }
  const bbox = area ? [x0, y0, x1 - x0 + 1, y1 - y0 + 1] : [0, 0, 0, 0];
  return {object, mask: {...object.mask, segmentation: encodeRle(pixels, width, height), area, bbox}};
}
