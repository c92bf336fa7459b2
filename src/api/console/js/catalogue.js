/*
 * The server's rules, as GET /v1/presets publishes them: the presets with the range of each
 * option (the table jobs are validated with), and which job states are still active. The page
 * keeps no copy of them; it reads them once per page load (signing in brings them along).
 */

import { api } from './api.js';

let loading = null; // a promise of the catalogue, once asked for
let active = null; // Set of the active states, once loaded

function adopt(data) {
  const presets = Array.isArray(data && data.presets) ? data.presets : [];
  const states = (data && data.states) || {};
  active = new Set(Array.isArray(states.active) ? states.active : []);
  const all = [...active, ...(Array.isArray(states.terminal) ? states.terminal : [])];
  return { presets, states: all };
}

/** The catalogue: { presets, states (every job state) }; asks the API the first time. */
export function loadCatalogue() {
  if (!loading) {
    // No signal: pages that stop waiting leave it to the next one that asks.
    const pending = api('GET', '/v1/presets').then(adopt);
    // A failed load is asked again next time.
    pending.catch(() => {
      if (loading === pending) loading = null;
    });
    loading = pending;
  }
  return loading;
}

/** Keeps a catalogue read elsewhere (signing in reads it to check the token). */
export function remember(data) {
  loading = Promise.resolve(adopt(data));
}

/** Whether a job in `state` may still change; false until the catalogue is loaded. */
export function isActive(state) {
  return Boolean(active) && active.has(state);
}

/** The range of `option` for a preset of the catalogue: { min, max, integer }, or null. */
export function rangeOf(preset, option) {
  const range = preset && preset.ranges && preset.ranges[option];
  if (!range || !Number.isFinite(range.min) || !Number.isFinite(range.max)) return null;
  return { min: range.min, max: range.max, integer: Boolean(range.integer) };
}
