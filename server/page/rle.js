// COCO run-length encoding, as the server sends masks (README, "The result").

// Decode COCO compressed RLE ({size: [H, W], counts: "..."}, as pycocotools
// writes it) into a row-major H*W Uint8Array of 0 and 1. The counts string
// holds run lengths, alternately of 0s and 1s, down the columns. Each run is
// written in 5-bit groups (character code - 48; 0x20 means "more follows",
// 0x10 in the last group is the sign), and from the third run on as the
// difference from the run two before (pycocotools' rleFrString).
export function decodeRle(segmentation) {
  const [height, width] = segmentation.size;
  const text = segmentation.counts;
  const runs = [];
  for (let p = 0; p < text.length;) {
    let value = 0, scale = 1, group;
    do {
      group = text.charCodeAt(p++) - 48;
      value += (group & 0x1f) * scale;
      scale *= 32;
    } while (group & 0x20);
    if (group & 0x10) value -= scale;
    if (runs.length > 2) value += runs[runs.length - 2];
    runs.push(value);
  }
  const mask = new Uint8Array(width * height);
  let position = 0;  // in column-major order
  runs.forEach((length, i) => {
    if (i % 2 === 1) {
      for (let j = position; j < position + length; j++) {
        mask[(j % height) * width + Math.floor(j / height)] = 1;
      }
    }
    position += length;
  });
  if (position !== width * height) {
    throw new Error(`the RLE covers ${position} pixels, not ${width}x${height}`);
  }
  return mask;
}

// A decoded mask is reused for as long as its segmentation object lives.
const decoded = new WeakMap();

export function maskPixels(segmentation) {
  let mask = decoded.get(segmentation);
  if (!mask) {
    mask = decodeRle(segmentation);
    decoded.set(segmentation, mask);
  }
  return mask;
}

// Encode a row-major H*W mask of 0 and 1 as COCO compressed RLE, as
// pycocotools' rleToString writes it (the inverse of decodeRle).
export function encodeRle(mask, width, height) {
  const runs = [];
  let value = 0, length = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const on = mask[y * width + x] ? 1 : 0;
      if (on !== value) {
        runs.push(length);
        value = on;
        length = 0;
      }
      length += 1;
    }
  }
  runs.push(length);
  let counts = "";
  runs.forEach((run, i) => {
    let x = i > 2 ? run - runs[i - 2] : run, more = true;
    while (more) {
      let group = x & 0x1f;
      x >>= 5;
      more = group & 0x10 ? x !== -1 : x !== 0;
      if (more) group |= 0x20;
      counts += String.fromCharCode(group + 48);
    }
  });
  const segmentation = {size: [height, width], counts};
  decoded.set(segmentation, mask);
  return segmentation;
}
