/*
 * Buttons that act on a second click (window.confirm would block tests and is awkward with
 * assistive technology).
 */

const CONFIRM_MS = 8000;

const armed = new Map(); // button -> { label, timer }

export function disarm(button) {
  const state = armed.get(button);
  if (!state) return;
  clearTimeout(state.timer);
  button.textContent = state.label;
  button.classList.remove('armed');
  armed.delete(button);
}

export function disarmAll() {
  for (const button of [...armed.keys()]) disarm(button);
}

/** The first click shows `prompt` for a while; a second one runs `action`. */
export function confirmThen(button, prompt, action) {
  if (armed.has(button)) {
    disarm(button);
    action();
    return;
  }
  const label = button.textContent;
  button.textContent = prompt;
  button.classList.add('armed');
  armed.set(button, { label, timer: setTimeout(() => disarm(button), CONFIRM_MS) });
}
