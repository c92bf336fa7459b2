/*
 * The new-job form's outputs: a checkbox per preset of the catalogue, and the options it takes,
 * with the ranges and choices the server publishes.
 */

import { authFailed, describe } from './api.js';
import { loadCatalogue, rangeOf } from './catalogue.js';
import { choiceFields, isDefault } from './choices.js';
import { $, el, isAbort, slug } from './dom.js';

const GIF_PRESET = 'gif';
const THUMBNAIL_PRESET = 'thumbnail';

/** How each option is shown; its values come from the catalogue. */
const OPTION_TEXT = {
  start: { label: 'Start (seconds)', hint: 'from the beginning when empty' },
  duration: { label: 'Duration (seconds)', hint: 'to the end when empty' },
  time: { label: 'Time (seconds)', hint: 'at 10 % of the length when empty' },
  max_height: { label: 'Largest short side (pixels)', hint: 'the source\'s size when empty' },
};

// [{ name, checkbox, group, inputs: [{ option, input, rule }], choices: [{ option, choice, read, ... }] }] once loaded
let presetFields = null;

/** The presets shown, once loaded; null before. */
export const fields = () => presetFields;

/** How one option of one preset is asked for: its words, and its range from the server. */
function ruleFor(preset, option) {
  const text = OPTION_TEXT[option];
  const range = rangeOf(preset, option);
  if (!text || !range) return null;
  const rule = { ...text, ...range };
  if (preset.name === GIF_PRESET && option === 'duration') {
    return { ...rule, hint: `${range.min} to ${range.max} s; a short default when empty` };
  }
  if (preset.name === THUMBNAIL_PRESET && option === 'time') return { ...rule, label: 'Time of the frame (seconds)' };
  return rule;
}

function optionId(preset, option) {
  if (preset === GIF_PRESET && (option === 'start' || option === 'duration')) return `gif-${option}`;
  if (preset === THUMBNAIL_PRESET && option === 'time') return 'thumbnail-time';
  return `opt-${slug(preset)}-${slug(option)}`;
}

/** Shows the catalogue's presets on the form, and its states in the jobs list's filter. */
export async function loadPresets(signal) {
  const status = $('presets-status');
  status.className = 'muted';
  status.textContent = 'Loading the presets…';
  status.hidden = false;
  try {
    const catalogue = await loadCatalogue();
    if (signal.aborted) return;
    renderPresets(catalogue.presets);
    renderStateFilter(catalogue.states);
    status.textContent = presetFields.length ? '' : 'This deployment offers no presets.';
    status.hidden = presetFields.length > 0;
  } catch (err) {
    if (isAbort(err) || authFailed(err) || signal.aborted) return;
    status.className = 'error';
    status.textContent = `The presets could not be loaded. ${describe(err)}`;
  }
}

function renderStateFilter(states) {
  const filter = $('state-filter');
  const chosen = filter.value;
  const options = states.map((state) => el('option', { value: state, text: state }));
  filter.replaceChildren(el('option', { value: '', text: 'all states' }), ...options);
  filter.value = states.includes(chosen) ? chosen : '';
}

function renderPresets(presets) {
  presetFields = [];
  const box = $('presets');
  box.replaceChildren();
  for (const preset of presets) {
    if (!preset || typeof preset.name !== 'string') continue;
    const { node, field } = presetItem(preset);
    presetFields.push(field);
    box.append(node);
  }
}

/** A checkbox with its label, and the preset's options, shown while it is checked. */
function presetItem(preset) {
  const name = preset.name;
  const id = `preset-${slug(name)}`;
  const checkbox = el('input', { type: 'checkbox', name: 'preset', value: name, id });
  const label = el('label', { for: id },
    el('span', { className: 'preset-name', text: name }),
    preset.description ? el('span', { className: 'preset-description', text: preset.description }) : null);
  const node = el('div', { className: 'preset' }, el('div', { className: 'check' }, checkbox, label));
  const inputs = [];
  const options = (Array.isArray(preset.options) ? preset.options : []).filter((o) => ruleFor(preset, o));
  const choices = choiceFields(preset);
  if (options.length || choices.length) {
    const group = el('fieldset', { className: 'options', id: `options-${slug(name)}` },
      el('legend', { text: `Options for ${name}` }));
    for (const option of options) {
      const rule = ruleFor(preset, option);
      const inputId = optionId(name, option);
      const hintId = `${inputId}-hint`;
      const input = el('input', {
        id: inputId, type: 'number', inputmode: 'decimal', min: rule.min, max: rule.max,
        step: rule.integer ? 1 : 'any', 'aria-describedby': hintId,
      });
      group.append(el('div', { className: 'field' },
        el('label', { for: inputId, text: rule.label }),
        input,
        el('span', { className: 'hint', id: hintId, text: rule.hint })));
      inputs.push({ option, input, rule });
    }
    for (const choice of choices) group.append(choice.node);
    group.hidden = true;
    checkbox.setAttribute('aria-controls', group.id);
    checkbox.addEventListener('change', () => { group.hidden = !checkbox.checked; });
    node.append(group);
  }
  return { node, field: { name, checkbox, group: node.querySelector('fieldset.options'), inputs, choices } };
}

export class FormError extends Error {
  constructor(message, field) {
    super(message);
    this.field = field;
  }
}

/** The outputs asked for, with the options the user filled in (and only those). */
export function chosenOutputs() {
  const outputs = [];
  for (const { name, checkbox, inputs, choices } of presetFields || []) {
    if (!checkbox.checked) continue;
    const output = { preset: name };
    for (const { option, input, rule } of inputs) {
      const raw = input.value.trim();
      if (input.validity && input.validity.badInput) {
        throw new FormError(`${rule.label} for ${name} is not a number.`, input);
      }
      if (raw === '') continue;
      const value = Number(raw);
      if (!Number.isFinite(value) || value < rule.min || value > rule.max || (rule.integer && !Number.isInteger(value))) {
        const kind = rule.integer ? 'a whole number' : 'a number';
        throw new FormError(`${rule.label} for ${name} must be ${kind} from ${rule.min} to ${rule.max}.`, input);
      }
      output[option] = value;
    }
    Object.assign(output, chosenValues(name, choices));
    outputs.push(output);
  }
  return outputs;
}

/**
 * The list options of one output, sent like the numeric ones: only when they differ from the
 * server's default (the catalogue's), so the job leaves the rest to the server.
 */
function chosenValues(name, choices) {
  const chosen = {};
  for (const { option, choice, label, read, first } of choices || []) {
    const value = read();
    if (choice.multiple && !value.length) {
      throw new FormError(`Choose at least one of the ${label.toLowerCase()} for ${name}.`, first);
    }
    if (!isDefault(choice, value)) chosen[option] = value;
  }
  return chosen;
}

export function syncOptionGroups() {
  for (const { checkbox, group } of presetFields || []) {
    if (group) group.hidden = !checkbox.checked;
  }
}

