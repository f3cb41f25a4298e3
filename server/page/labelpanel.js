// The label set beside the image: each label with its colour, its key and
// its id; a click or the digit key picks it for the next object, and a list
// file adds labels to the set (labels.js).

import {colourOfLabel, importLabels, labelSet} from "./labels.js";
import {showError} from "./panel.js";

const $ = (id) => document.getElementById(id);

export function pickLabel(name) {
  $("label").value = name;
  showLabels();
}

// The digit keys 1 to 9: the set's labels in the order shown.
export function pickLabelByKey(digit) {
  const label = labelSet()[digit - 1];
  if (label) pickLabel(label.name);
  return Boolean(label);
}

let shownSet = null, shownPick = null;
export function showLabels() {
  const set = labelSet(), picked = $("label").value.trim();
  if (set === shownSet && picked === shownPick) return;
  shownSet = set;
  shownPick = picked;
  $("label-set").replaceChildren(...set.map(({id, name}, i) => {
    const item = document.createElement("li");
    item.dataset.id = id;
    item.classList.toggle("picked", name === picked);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${colourOfLabel(name).join(", ")})`;
    const key = document.createElement("kbd");
    key.textContent = i < 9 ? String(i + 1) : "";
    const text = document.createElement("span");
    text.className = "name";
    text.textContent = name;
    const number = document.createElement("span");
    number.className = "label-id";
    number.textContent = `id ${id}`;
    item.append(swatch, key, text, number);
    item.addEventListener("click", () => pickLabel(name));
    return item;
  }));
  $("labels").replaceChildren(...set.map(({name}) => Object.assign(document.createElement("option"), {value: name})));
}

export function listenLabels() {
  $("label").addEventListener("input", showLabels);
  $("import-labels").addEventListener("change", async () => {
    const file = $("import-labels").files[0];
    if (!file) return;
    try {
      importLabels(await file.text());
      showError("");
    } catch (error) {
      showError(error.message);
    }
    $("import-labels").value = "";
    showLabels();
  });
}
