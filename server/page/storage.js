// What survives a reload, in this browser's local storage: the token, the
// settings, the last image, and the objects of the most recent images (by
// the image's SHA-256, so that reopening the same image finds them).

const PREFIX = "cap.";
const RECENT_IMAGES = 20;

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

export function loadObjects(sha256) {
  return load(`objects.${sha256}`, null);
}

export function saveObjects(sha256, objects) {
  const recent = [sha256, ...load("recent", []).filter((other) => other !== sha256)];
  for (const old of recent.splice(RECENT_IMAGES)) localStorage.removeItem(`${PREFIX}objects.${old}`);
  return save("recent", recent) && save(`objects.${sha256}`, objects);
}
