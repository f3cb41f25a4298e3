// The next image of the set is prepared while the person works on the
// current one: sent on a session of its own with `"prompts": []`, so that
// the server caches its embedding, and named by its hash when it is opened.
// Moving on then never waits for the encoder.

import {advice} from "./advice.js";
import {imageSet, sourceOf} from "./imageset.js";
import {Session} from "./session.js";
import {app, changed} from "./state.js";

let ahead = null;  // {entry, session}

export function prepareAhead() {
  if (!app.image || !app.image.sha256) return;  // the open image first
  const next = imageSet.entries[imageSet.index + 1];
  if (!next || next.sha256 || next.refused || (ahead && ahead.entry === next)) return;
  if (ahead) ahead.session?.close();
  const mine = {entry: next, session: null};
  ahead = mine;
  sourceOf(next).then((source) => {
    if (ahead !== mine) return;
    const done = () => {
      mine.session.close();
      if (ahead === mine) ahead = null;
      changed();
    };
    mine.session = new Session(source, app.token, {
      prepared(entry, result) {
        Object.assign(next, {sha256: result.image.sha256, width: result.image.width, height: result.image.height});
        done();
      },
      failed(entry, error) {
        next.refused = advice(error);
        done();
      },
      answer() {},
      progress() {},
      connection() {},
    });
  }, () => {
    if (ahead === mine) ahead = null;  // its file is not open: it is read when it is opened
  });
}
