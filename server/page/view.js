// The view: where the image sits in the canvas. One transform maps image
// pixels to screen (CSS) pixels: screen = image * scale + offset. The image,
// the masks and the prompts are all drawn through it, so they stay aligned
// at every zoom; the canvas's data-transform attribute states it.

const MIN_SCALE = 1 / 64, MAX_SCALE = 64;

export class View {
  constructor(canvas) {
    this.canvas = canvas;
    this.scale = 1;
    this.x = 0;
    this.y = 0;
    this.imageWidth = 0;
    this.imageHeight = 0;
  }

  // Match the canvas's backing store to its size on screen; returns whether it changed.
  resize() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(this.canvas.clientWidth * ratio), height = Math.round(this.canvas.clientHeight * ratio);
    if (this.canvas.width === width && this.canvas.height === height) return false;
    this.canvas.width = width;
    this.canvas.height = height;
    return true;
  }

  setImage(width, height) {
    this.imageWidth = width;
    this.imageHeight = height;
    this.fit();
  }

  // The whole image in the canvas, centred.
  fit() {
    const width = this.canvas.clientWidth, height = this.canvas.clientHeight;
    if (!this.imageWidth || !width || !height) return;
    this.scale = Math.min(width / this.imageWidth, height / this.imageHeight);
    this.x = (width - this.imageWidth * this.scale) / 2;
    this.y = (height - this.imageHeight * this.scale) / 2;
    this.publish();
  }

  // Where the view was, as `where` gives it, for an image opened again.
  where() {
    return {scale: this.scale, x: this.x, y: this.y};
  }

  restore({scale, x, y}) {
    Object.assign(this, {scale, x, y});
    this.publish();
  }

  // Zoom by `factor`, keeping the image pixel under the screen point (sx, sy) where it is.
  zoomAt(sx, sy, factor) {
    const [ix, iy] = this.toImage(sx, sy);
    this.scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.scale * factor));
    this.x = sx - ix * this.scale;
    this.y = sy - iy * this.scale;
    this.publish();
  }

  panBy(dx, dy) {
    this.x += dx;
    this.y += dy;
    this.publish();
  }

  toImage(sx, sy) {
    return [(sx - this.x) / this.scale, (sy - this.y) / this.scale];
  }

  toScreen(ix, iy) {
    return [ix * this.scale + this.x, iy * this.scale + this.y];
  }

  // The event's position in CSS pixels of the canvas.
  eventPoint(event) {
    const rect = this.canvas.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  // The transform for drawing in image pixels on the canvas's backing store.
  imageTransform(context) {
    const ratio = this.canvas.width / (this.canvas.clientWidth || 1);
    context.setTransform(ratio * this.scale, 0, 0, ratio * this.scale, ratio * this.x, ratio * this.y);
  }

  screenTransform(context) {
    const ratio = this.canvas.width / (this.canvas.clientWidth || 1);
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
  }

  publish() {
    this.canvas.dataset.transform = JSON.stringify([this.scale, this.x, this.y]);
  }
}
