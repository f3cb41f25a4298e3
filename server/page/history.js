// Undo and redo: a list of states, each a step the person took. A state is
// never changed once recorded; a new step drops the states after the current one.

export class History {
  constructor(state) {
    this.states = [state];
    this.index = 0;
  }

  get current() {
    return this.states[this.index];
  }

  push(state) {
    this.states.splice(this.index + 1, Infinity, state);
    this.index += 1;
  }

  get canUndo() {
    return this.index > 0;
  }

  get canRedo() {
    return this.index < this.states.length - 1;
  }

  undo() {
    if (this.canUndo) this.index -= 1;
  }

  redo() {
    if (this.canRedo) this.index += 1;
  }
}
