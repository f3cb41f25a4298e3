// The controls for editing and display: the tool (prompts, brush, eraser)
// and its size, refining the selected object with clicks, and how objects
// are drawn (fill opacity, outlines, all hidden).

import {tools} from "./brush.js";
import {app, refineObject, setDisplay} from "./state.js";

const $ = (id) => document.getElementById(id);
const TOOLS = ["prompt", "brush", "eraser"];

export function setTool(tool) {
  tools.current = tool;
  showEditing();
}

export const refineSelected = () => app.selected && refineObject(app.selected);

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
