// The work kept in this browser's IndexedDB, so that a reload loses nothing:
// the image set (names, URLs, hashes, sizes, which are done, each image's
// view), and each image's objects by the image's SHA-256, so that an image
// opened again, in this set or another, finds its objects. IndexedDB holds
// far more than local storage's few megabytes (storage.js keeps only the
// token and the settings there).

const NAME = "cap", VERSION = 1;

let opening = null;
function database() {
  opening ||= new Promise((resolve, reject) => {
    const request = indexedDB.open(NAME, VERSION);
    request.onupgradeneeded = () => {
      request.result.createObjectStore("sets");
      request.result.createObjectStore("objects");
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  return opening;
}

// One transaction over `stores`; `work(stores)` may return a request whose result is wanted.
async function transaction(stores, mode, work) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(stores, mode);
    const request = work(...stores.map((name) => tx.objectStore(name)));
    tx.oncomplete = () => resolve(request ? request.result : undefined);
    tx.onerror = tx.onabort = () => reject(tx.error || new Error("the transaction was aborted"));
  });
}

// The set as it was left, or null.
export const loadSet = () => transaction(["sets"], "readonly", (sets) => sets.get("current")).catch(() => null);

export const loadObjects = (sha256) => transaction(["objects"], "readonly", (objects) => objects.get(sha256))
  .catch(() => null);

// record: the set (imageset.js setRecord); objects: [[sha256, objects], ...] that changed.
export function saveSet(record, objects) {
  return transaction(["sets", "objects"], "readwrite", (sets, store) => {
    sets.put(record, "current");
    for (const [sha256, list] of objects) store.put(list, sha256);
  });
}

// Objects by hash, kept where there are none yet (the ones an earlier version kept in local storage).
export function addObjects(pairs) {
  return transaction(["objects"], "readwrite", (store) => {
    for (const [sha256, list] of pairs) {
      const request = store.get(sha256);
      request.onsuccess = () => {
        if (!request.result || !request.result.length) store.put(list, sha256);
      };
    }
  });
}
