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
