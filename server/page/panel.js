// What the page says beside the image: the controls' state, the list of
// objects, and the footer's sentences (connection, progress, errors).

import {colourOf, paintLayers, render} from "./drawing.js";
import {
  acceptObject, app, changeObject, currentMask, currentPrompt, deleteObject, isEmpty, state, usable,
} from "./state.js";

const $ = (id) => document.getElementById(id);

export function showError(sentence, code) {
  $("error").textContent = sentence;
  $("error").title = code || "";
}

let ticker = null;
export function showProgress(entry) {
  clearInterval(ticker);
  const say = () => {
    const seconds = ((performance.now() - entry.sentAt) / 1000).toFixed(1);
    const queued = entry.phase === "queued" && entry.position > 1 ? `, position ${entry.position} in the queue` : "";
    const doing = {prepare: "preparing", everything: "segmenting everything"}[entry.kind] || "segmenting";
    const points = entry.total ? `, ${entry.done} of ${entry.total} points` : "";
    $("progress").textContent = `${doing}… ${seconds} s${queued}${points}`;
  };
  if (entry.phase === "result") {
    const seconds = entry.elapsed.toFixed(2);
    $("progress").textContent = {
      prepare: `Prepared in ${seconds} s: click the object.`,
      everything: `Everything in ${seconds} s: accept, label or delete each unlabelled object.`,
      render: `Full-size mask in ${seconds} s.`,
    }[entry.kind] || `Mask in ${seconds} s.`;
    if (entry.kind === "prepare") showError("");
  } else if (entry.phase === "error") {
    $("progress").textContent = "";
  } else {
    say();
    ticker = setInterval(say, 100);
  }
}

export function showConnection(condition, health) {
  const sentences = {
    connecting: "Connecting…",
    open: "Connected.",
    idle: "Connected (the session rests until the next click).",
    ready: "The server is up; connecting…",
    unready: `The server is not ready yet${health && health.model_loaded === false ? " (the model is loading)" : ""}; trying again.`,
    gone: "The server is gone: it does not answer. The page reconnects when it is back.",
    token: app.token
      ? "The server refused the API token: type the right one in the Token field."
      : "This server needs an API token: type it in the Token field.",
  };
  $("connection").textContent = sentences[condition];
  $("connection").dataset.state = condition;
  if (condition !== "open" && condition !== "idle" && condition !== "connecting") clearInterval(ticker);
}

// What /health said while no image is open.
export function showServerState(condition, health) {
  $("connection").textContent = {
    ready: "The server is ready.",
    unready: "The server is not ready yet.",
  }[condition] || "";
  if (condition !== "ready" && condition !== "unready") showConnection(condition, health);
  $("connection").dataset.state = condition;
}

export function showProgressHint(sentence) {
  $("progress").textContent = sentence;
}

export function showControls() {
  const prompt = currentPrompt(), shown = currentMask();
  $("accept").disabled = isEmpty(prompt) || Boolean(app.live) || Boolean(app.acceptOnAnswer);
  $("clear").disabled = isEmpty(prompt);
  $("undo").disabled = !app.history.canUndo;
  $("redo").disabled = !app.history.canRedo;
  const candidates = shown ? shown.answer.candidates.length : 0;
  $("next-candidate").disabled = candidates < 2;
  $("candidate").textContent = app.acceptOnAnswer ? "accepting as the mask arrives…" : shown
    ? `${candidates > 1 ? `candidate ${shown.index + 1} of ${candidates}, ` : ""}score ${shown.mask.score.toFixed(3)}` : "";
  // The image that can be clicked now: shown by this browser and prepared by the server.
  $("stage").dataset.ready = usable() && app.image.sha256 ? app.image.name : "";
  $("everything").disabled = !usable() || !app.image?.sha256 || !app.session?.prepared;
  $("multimask").checked = app.settings.multimask;
  $("polygons").checked = app.settings.polygons;
}

let shownObjects = null, shownSelected = null;
export function showObjects() {
  const objects = state().objects;
  if (objects === shownObjects && app.selected === shownSelected) return;
  shownObjects = objects;
  shownSelected = app.selected;
  $("objects").replaceChildren(...objects.map((object) => {
    const item = document.createElement("li");
    item.dataset.id = object.id;
    item.classList.toggle("selected", object.id === app.selected);
    item.classList.toggle("hidden", object.hidden);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${colourOf(object).join(", ")})`;
    const name = document.createElement("input");
    name.className = "name";
    name.value = object.label;
    name.placeholder = "unlabelled";
    name.setAttribute("aria-label", "label");
    name.addEventListener("change", () => {
      const label = name.value.trim();
      if (label && object.proposed) acceptObject(object.id, label);
      else if (label && label !== object.label) changeObject(object.id, {label});
      else name.value = object.label;
    });
    const hide = button(object.hidden ? "show" : "hide", () => changeObject(object.id, {hidden: !object.hidden}));
    const remove = button("delete", () => deleteObject(object.id));
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `score ${object.mask.score.toFixed(3)}, area ${object.mask.area} px`;
    item.classList.toggle("proposed", Boolean(object.proposed));
    if (object.proposed) item.append(swatch, name, button("accept", () => acceptObject(object.id, $("label").value)));
    else item.append(swatch, name);
    item.append(hide, remove, score);
    item.addEventListener("pointerdown", () => select(object.id));
    return item;
  }));
}

function button(text, action) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  element.addEventListener("click", action);
  return element;
}

// Selecting marks the row in place: rebuilding the list would swallow the click that selected it.
function select(id) {
  if (app.selected === id) return;
  app.selected = shownSelected = id;
  for (const item of $("objects").children) item.classList.toggle("selected", item.dataset.id === id);
  paintLayers();
  render();
}
