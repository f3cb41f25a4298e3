// Small things that survive a reload, in this browser's local storage: the
// token, the settings, the last label and the label set. The work itself is
// kept in IndexedDB (persist.js).

const PREFIX = "cap.";

export function load(key, fallback) {
  try {
    const text = localStorage.getItem(PREFIX + key);
    return text === null ? fallback : JSON.parse(text);
  } catch {
    return fallback;
  }
}

// False when the browser refused (storage full, or disabled).
export function save(key, value) {
  try {
    localStorage.setItem(PREFIX + key, JSON.stringify(value));
    return true;
  } catch {
    return false;
  }
}

// Objects an earlier version of the page kept here (by image hash), taken
// out to go to IndexedDB; they are removed once it holds them.
export function oldObjects() {
  const found = [];
  for (let i = 0; i < localStorage.length; i++) {
    const key = localStorage.key(i);
    if (key.startsWith(`${PREFIX}objects.`)) found.push([key.slice(PREFIX.length + "objects.".length), load(key.slice(PREFIX.length), [])]);
  }
  return found;
}

export function forgetOldObjects(found) {
  for (const [sha256] of found) localStorage.removeItem(`${PREFIX}objects.${sha256}`);
  localStorage.removeItem(`${PREFIX}recent`);
  localStorage.removeItem(`${PREFIX}image`);
}
