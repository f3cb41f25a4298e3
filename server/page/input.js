// What the person does: the mouse on the image (points, boxes, pan, zoom),
// a dropped file, the keys, and the controls beside the image. Each becomes
// a change of the state (state.js) or of the view.

import {endStroke, startStroke, strokeTo, tools} from "./brush.js";
import {canvas, paintLayers, render, view} from "./drawing.js";
import {editable, refineSelected, setTool} from "./editpanel.js";
import {pickLabelByKey} from "./labelpanel.js";
import {askEverything, tokenChanged} from "./messages.js";
import {showError} from "./panel.js";
import {goBy, openFiles, openUrls} from "./setpanel.js";
import {
  accept, addPoint, app, changeObject, clearPrompt, deleteObject, dragBox, endBoxDrag, nextCandidate, redo,
  removePoint, setDisplay, setPolygons, setToken, state, toggleHidden, toggleMultimask, undo, usable,
} from "./state.js";
import * as storage from "./storage.js";

const HANDLE = 7;      // screen pixels around a box's corner or edge, or a point, that catch the mouse
const DRAG = 4;        // screen pixels a press must move to become a drag
const ZOOM_STEP = 0.0015;

const $ = (id) => document.getElementById(id);
const stage = $("stage");

let drag = null;     // the press, drag or pan under way, on the image it began on
let space = false;   // Space is held: a drag pans

// --- the mouse ----------------------------------------------------------------------------

const round = (value, places) => Math.round(value * 10 ** places) / 10 ** places;

// The image pixel under a screen point, or null outside the image.
function imagePoint(sx, sy, clamp = false) {
  let [x, y] = view.toImage(sx, sy);
  const {width, height} = app.image;
  if (clamp) {
    x = Math.min(Math.max(x, 0), width);
    y = Math.min(Math.max(y, 0), height);
  } else if (x < 0 || y < 0 || x > width || y > height) {
    return null;
  }
  return [round(x, 1), round(y, 1)];
}

function boxFromCorners([ax, ay], [bx, by]) {
  const x = Math.round(Math.min(ax, bx)), y = Math.round(Math.min(ay, by));
  return {x, y, width: Math.round(Math.max(ax, bx)) - x, height: Math.round(Math.max(ay, by)) - y};
}

// What a press at (sx, sy) grabs of the current prompt: a point, a box corner or edge, or nothing.
function grab(sx, sy) {
  const prompt = state().prompt;
  const point = prompt.points.findIndex((p) => {
    const [x, y] = view.toScreen(p.x, p.y);
    return Math.hypot(x - sx, y - sy) <= HANDLE;
  });
  if (point >= 0) return {kind: "point", index: point};
  const box = prompt.box;
  if (!box) return null;
  const [x0, y0] = view.toScreen(box.x, box.y), [x1, y1] = view.toScreen(box.x + box.width, box.y + box.height);
  const near = (a, b) => Math.abs(a - b) <= HANDLE;
  for (const [cx, cy, ox, oy] of [[x0, y0, x1, y1], [x1, y0, x0, y1], [x0, y1, x1, y0], [x1, y1, x0, y0]]) {
    if (near(sx, cx) && near(sy, cy)) return {kind: "resize", anchor: view.toImage(ox, oy)};
  }
  const alongX = sx > x0 - HANDLE && sx < x1 + HANDLE, alongY = sy > y0 - HANDLE && sy < y1 + HANDLE;
  if ((alongX && (near(sy, y0) || near(sy, y1))) || (alongY && (near(sx, x0) || near(sx, x1)))) return {kind: "move"};
  return null;
}

// The gesture under way, unless another image was opened since it began.
function currentDrag() {
  if (drag && drag.image !== app.image) drag = null;
  return drag;
}

function press(event) {
  if (!usable()) return;
  const [sx, sy] = view.eventPoint(event);
  canvas.setPointerCapture(event.pointerId);
  stage.focus();
  if (event.button === 1 || (event.button === 0 && space)) {
    drag = {kind: "pan", image: app.image, sx, sy};
    stage.classList.add("panning");
    event.preventDefault();
  } else if (event.button === 2) {
    const point = imagePoint(sx, sy);
    if (point) addPoint(...point, 0);
  } else if (event.button === 0 && tools.current !== "prompt") {
    const object = state().objects.find((o) => o.id === app.selected);
    if (!object) {
      showError("Select an object to paint on (click its row in the list).");
      return;
    }
    if (!editable(object)) return;
    startStroke(object);
    drag = {kind: "paint", image: app.image};
    paint(sx, sy);
  } else if (event.button === 0) {
    const grabbed = grab(sx, sy);
    drag = {kind: "press", image: app.image, sx, sy, shift: event.shiftKey, grabbed, start: view.toImage(sx, sy),
            box: state().prompt.box, moved: false};
  }
}

function move(event) {
  const [sx, sy] = view.eventPoint(event);
  const drag = currentDrag();
  if (!drag) {
    hover(sx, sy);
    return;
  }
  if (drag.kind === "paint") {
    paint(sx, sy);
    return;
  }
  if (drag.kind === "pan") {
    view.panBy(sx - drag.sx, sy - drag.sy);
    Object.assign(drag, {sx, sy});
    render();
    return;
  }
  if (!drag.moved && Math.hypot(sx - drag.sx, sy - drag.sy) < DRAG) return;
  drag.moved = true;
  const here = imagePoint(sx, sy, true);
  const grabbed = drag.grabbed;
  if (grabbed && grabbed.kind === "resize") {
    dragBox(boxFromCorners(grabbed.anchor, here));
  } else if (grabbed && grabbed.kind === "move") {
    const {width, height} = app.image, box = drag.box;
    const [ix, iy] = view.toImage(sx, sy);
    const x = Math.min(Math.max(box.x + Math.round(ix - drag.start[0]), 0), width - box.width);
    const y = Math.min(Math.max(box.y + Math.round(iy - drag.start[1]), 0), height - box.height);
    dragBox({x, y, width: box.width, height: box.height});
  } else {
    dragBox(boxFromCorners(imagePoint(drag.sx, drag.sy, true), here));
  }
}

function release(event) {
  const ended = currentDrag();
  drag = null;
  stage.classList.remove("panning");
  if (ended && ended.kind === "paint") {
    const edit = endStroke();
    if (edit) changeObject(edit.object.id, {mask: edit.mask});
    return;
  }
  if (!ended || ended.kind === "pan") return;
  if (ended.moved) {
    endBoxDrag();
    return;
  }
  if (ended.grabbed && ended.grabbed.kind === "point") {
    removePoint(ended.grabbed.index);
    return;
  }
  const point = imagePoint(ended.sx, ended.sy);
  if (point && event.type === "pointerup") addPoint(...point, ended.shift ? 0 : 1);
}

// The brush or eraser at screen point (sx, sy): its size is in screen pixels.
function paint(sx, sy) {
  strokeTo(...view.toImage(sx, sy), tools.size / 2 / view.scale);
  paintLayers();
  render();
}

function hover(sx, sy) {
  const grabbed = usable() && !space ? grab(sx, sy) : null;
  stage.classList.toggle("move", grabbed?.kind === "move");
  stage.classList.toggle("resize", grabbed?.kind === "resize");
}

function wheel(event) {
  event.preventDefault();
  if (!usable()) return;
  const [sx, sy] = view.eventPoint(event);
  view.zoomAt(sx, sy, Math.exp(-event.deltaY * ZOOM_STEP));
  render();
}

// --- the keyboard -------------------------------------------------------------------------

function keyDown(event) {
  const typing = event.target.matches("input, textarea, select");
  const control = event.ctrlKey || event.metaKey;
  if (event.target === $("label") && event.key === "Enter") {
    event.preventDefault();
    accept($("label").value);
    return;
  }
  if (typing) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  const key = event.key.toLowerCase();
  if (control && key === "z") event.shiftKey ? redo() : undo();
  else if (control && key === "y") redo();
  else if (control || event.altKey) return;
  else if (event.key === " ") {
    space = true;
    stage.classList.add("space");
  } else if (event.key === "Enter") accept($("label").value);
  else if (event.key === "Escape") tools.current === "prompt" ? clearPrompt() : setTool("prompt");
  else if (key === "b") setTool("brush");
  else if (key === "e") setTool("eraser");
  else if (key === "r") refineSelected();
  else if (key === "a") setDisplay({hideAll: !app.settings.hideAll});
  else if (/^[1-9]$/.test(event.key)) {
    if (!pickLabelByKey(Number(event.key))) return;
  }
  else if (key === "m") toggleMultimask();
  else if (key === "c") nextCandidate();
  else if (key === "f") goBy(1);
  else if (key === "d") goBy(-1);
  else if (event.key === "0" && app.image) {
    view.fit();
    render();
  } else if (key === "h" && app.selected) toggleHidden(app.selected);
  else if ((event.key === "Delete" || event.key === "Backspace") && app.selected) deleteObject(app.selected);
  else return;
  event.preventDefault();
}

function keyUp(event) {
  if (event.key === " ") {
    space = false;
    stage.classList.remove("space");
  }
}

// --- listening ----------------------------------------------------------------------------

export function listen() {
  canvas.addEventListener("pointerdown", press);
  canvas.addEventListener("pointermove", move);
  canvas.addEventListener("pointerup", release);
  canvas.addEventListener("pointercancel", release);
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.addEventListener("wheel", wheel, {passive: false});
  canvas.addEventListener("mousedown", (event) => {
    if (event.button === 1) event.preventDefault();  // a middle press pans here, it does not autoscroll
  });

  // Drop an image file on the stage.
  stage.addEventListener("dragover", (event) => {
    event.preventDefault();
    stage.classList.add("drop");
  });
  stage.addEventListener("dragleave", () => stage.classList.remove("drop"));
  stage.addEventListener("drop", (event) => {
    event.preventDefault();
    stage.classList.remove("drop");
    if (event.dataTransfer.files.length) openFiles(event.dataTransfer.files);
  });

  window.addEventListener("keydown", keyDown);
  window.addEventListener("keyup", keyUp);

  $("open-url").addEventListener("submit", (event) => {
    event.preventDefault();
    openUrls($("image-url").value);
  });
  $("image-file").addEventListener("change", () => {
    if ($("image-file").files.length) openFiles($("image-file").files);
  });
  $("token").value = app.token;
  $("token").addEventListener("change", () => {
    setToken($("token").value.trim());
    tokenChanged();
  });
  $("label").value = storage.load("label", "object");
  $("accept").addEventListener("click", () => accept($("label").value));
  $("clear").addEventListener("click", clearPrompt);
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("next-candidate").addEventListener("click", nextCandidate);
  $("everything").addEventListener("click", () => askEverything($("everything-parameters").value));
  $("multimask").addEventListener("change", toggleMultimask);
  $("polygons").addEventListener("change", () => setPolygons($("polygons").checked));
}
