// A mask's COCO polygons, traced here at export, as the server traces them
// (server/polygons.py): outer rings along pixel edges, in image pixels, each
// a flat [x1, y1, x2, y2, ...] list. Holes are filled (COCO polygons have
// none); pixels that touch only at a corner stay in one ring. Rasterised by
// COCO's own code, the rings give back the mask with its holes filled.

// Directions along pixel edges, screen coordinates (y down): east, south, west, north.
const STEPS = [[1, 0], [0, 1], [-1, 0], [0, -1]];
const leftOf = (direction) => (direction + 3) % 4;

// The mask and the holes it encloses: all but the background 4-connected to the outside.
function filledMask(mask, width, height) {
  const paddedWidth = width + 2, size = paddedWidth * (height + 2);
  const outside = new Uint8Array(size), stack = new Int32Array(size);
  const inMask = (x, y) => x >= 1 && y >= 1 && x <= width && y <= height && mask[(y - 1) * width + x - 1];
  let top = 0;
  stack[top++] = 0;
  outside[0] = 1;
  while (top) {
    const p = stack[--top], x = p % paddedWidth, y = (p - x) / paddedWidth;
    for (const [dx, dy] of STEPS) {
      const nx = x + dx, ny = y + dy, q = ny * paddedWidth + nx;
      if (nx < 0 || ny < 0 || nx >= paddedWidth || ny >= height + 2 || outside[q] || inMask(nx, ny)) continue;
      outside[q] = 1;
      stack[top++] = q;
    }
  }
  const filled = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) filled[y * width + x] = outside[(y + 1) * paddedWidth + x + 1] ? 0 : 1;
  }
  return filled;
}

// The boundary's edges, each with the mask on its right: per grid vertex, a bit per direction leaving it.
function boundaryEdges(filled, width, height) {
  const columns = width + 1, leaving = new Uint8Array(columns * (height + 1));
  const on = (x, y) => x >= 0 && y >= 0 && x < width && y < height && filled[y * width + x] === 1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (!on(x, y)) continue;
      if (!on(x, y - 1)) leaving[y * columns + x] |= 1;              // top edge, eastwards
      if (!on(x + 1, y)) leaving[y * columns + x + 1] |= 2;          // right edge, southwards
      if (!on(x, y + 1)) leaving[(y + 1) * columns + x + 1] |= 4;    // bottom edge, westwards
      if (!on(x - 1, y)) leaving[(y + 1) * columns + x] |= 8;        // left edge, northwards
    }
  }
  return leaving;
}

// Follow edges from `start` until back there; where two edges leave a vertex
// (pixels touching at a corner), turn left, which keeps them in one ring.
function traceRing(leaving, columns, start) {
  const vertices = [];
  let vertex = start, heading = -1, firstDirection = -1;
  do {
    let direction = heading >= 0 && leaving[vertex] & (1 << leftOf(heading)) ? leftOf(heading) : -1;
    if (direction < 0) direction = [0, 1, 2, 3].find((d) => leaving[vertex] & (1 << d));
    leaving[vertex] &= ~(1 << direction);
    if (direction !== heading) vertices.push(vertex % columns, Math.floor(vertex / columns));
    if (firstDirection < 0) firstDirection = direction;
    heading = direction;
    vertex += STEPS[direction][0] + STEPS[direction][1] * columns;
  } while (vertex !== start);
  return heading === firstDirection ? vertices.slice(2) : vertices;  // the start is a corner only if the ring turns there
}

// `mask`: row-major width*height 0/1 pixels. Returns COCO polygons.
export function outerRings(mask, width, height) {
  const leaving = boundaryEdges(filledMask(mask, width, height), width, height);
  const rings = [];
  for (let vertex = 0; vertex < leaving.length; vertex++) {
    while (leaving[vertex]) rings.push(traceRing(leaving, width + 1, vertex));
  }
  return rings;
}
