// The controls for editing and display: the tool (prompts, brush, eraser)
// and its size, refining the selected object with clicks, and how objects
// are drawn (fill opacity, outlines, all hidden).

import {tools} from "./brush.js";
import {showError} from "./panel.js";
import {app, isFullSize, refineObject, setDisplay, state} from "./state.js";

const $ = (id) => document.getElementById(id);
const TOOLS = ["prompt", "brush", "eraser"];

export function setTool(tool) {
  tools.current = tool;
  showEditing();
}

// An object's mask is edited (brushed, erased, refined) only at full size: the one drawn at the canvas's
// size would be replaced by its full-size one when that comes, and the edit lost.
export function editable(object) {
  if (isFullSize(object.mask)) return true;
  showError("This object's full-size mask is still on its way: edit it in a moment.");
  return false;
}

export function refineSelected() {
  const object = state().objects.find((o) => o.id === app.selected);
  if (object && editable(object)) refineObject(object.id);
}

export function showEditing() {
  for (const tool of TOOLS) $(`tool-${tool}`).setAttribute("aria-pressed", String(tools.current === tool));
  $("stage").dataset.tool = tools.current;
  $("opacity").value = app.settings.opacity;
  $("outlines").checked = app.settings.outlines;
  $("hide-all").checked = app.settings.hideAll;
}

export function listenEditing() {
  for (const tool of TOOLS) $(`tool-${tool}`).addEventListener("click", () => setTool(tool));
  $("brush-size").value = tools.size;
  $("brush-size").addEventListener("input", () => {
    tools.size = Number($("brush-size").value);
  });
  $("refine").addEventListener("click", refineSelected);
  $("opacity").addEventListener("input", () => setDisplay({opacity: Number($("opacity").value)}));
  $("outlines").addEventListener("change", () => setDisplay({outlines: $("outlines").checked}));
  $("hide-all").addEventListener("change", () => setDisplay({hideAll: $("hide-all").checked}));
}
