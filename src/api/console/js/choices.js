/*
 * The new-job form's list options (`codecs`, `packaging` of a `cmaf` ladder): their values and
 * defaults come from the catalogue's `choices`; the words shown for them live here. An option
 * of several values is a checkbox per value, an option of one value a select.
 */

import { el, slug } from './dom.js';

/** How each list option and its values are shown; a value without words shows its name. */
const CHOICE_TEXT = {
  codecs: {
    label: 'Video codecs',
    hint: 'at least one; each is a ladder of its own, and players pick the one they decode',
    values: { h264: 'H.264 (every device)', hevc: 'HEVC (H.265, Apple and TVs)', av1: 'AV1 (recent browsers and devices)' },
  },
  packaging: {
    label: 'Packaging',
    hint: 'one file per rendition makes a few objects per title, for stores that charge per object',
    values: { segments: 'Segments of about six seconds', single_file: 'One file per rendition (byte ranges)' },
  },
};

/** A list option of the catalogue, checked: { values, default, multiple }, or null. */
function choiceOf(preset, option) {
  const choice = preset && preset.choices && preset.choices[option];
  if (!choice || !Array.isArray(choice.values)) return null;
  const values = choice.values.filter((v) => typeof v === 'string' && v);
  if (!values.length) return null;
  const defaults = (Array.isArray(choice.default) ? choice.default : []).filter((v) => values.includes(v));
  return { values, default: defaults, multiple: Boolean(choice.multiple) };
}

const textOf = (option) => CHOICE_TEXT[option] || { label: option, hint: '', values: {} };

/**
 * The controls of each list option of `preset`: `{ node, option, choice, read }` where `read()`
 * returns the values chosen (a list when `multiple`, else one value) and `first` the control a
 * form error points at.
 */
export function choiceFields(preset) {
  const choices = preset && preset.choices && typeof preset.choices === 'object' ? preset.choices : {};
  return Object.keys(choices).map((option) => {
    const choice = choiceOf(preset, option);
    return choice ? choiceField(preset.name, option, choice) : null;
  }).filter(Boolean);
}

function choiceField(name, option, choice) {
  const text = textOf(option);
  const id = `opt-${slug(name)}-${slug(option)}`;
  const hintId = `${id}-hint`;
  const words = (value) => text.values[value] || value;
  if (choice.multiple) {
    const boxes = choice.values.map((value) => el('input', {
      type: 'checkbox', id: `${id}-${slug(value)}`, name: `${name}-${option}`, value,
      checked: choice.default.includes(value),
    }));
    const node = el('fieldset', { className: 'field choices', id, 'aria-describedby': hintId },
      el('legend', { text: text.label }),
      ...boxes.map((box) => el('div', { className: 'check' }, box, el('label', { for: box.id, text: words(box.value) }))),
      el('span', { className: 'hint', id: hintId, text: text.hint }));
    const read = () => boxes.filter((box) => box.checked).map((box) => box.value);
    return { node, option, choice, label: text.label, read, first: boxes[0] };
  }
  const select = el('select', { id, 'aria-describedby': hintId },
    ...choice.values.map((value) => el('option', { value, text: words(value), selected: choice.default.includes(value) })));
  const node = el('div', { className: 'field choice' },
    el('label', { for: id, text: text.label }), select, el('span', { className: 'hint', id: hintId, text: text.hint }));
  return { node, option, choice, label: text.label, read: () => select.value, first: select };
}

/** Whether `chosen` (a list or one value) is the option's default, which the job leaves out. */
export function isDefault(choice, chosen) {
  if (!Array.isArray(chosen)) return choice.default.length === 1 && choice.default[0] === chosen;
  return chosen.length === choice.default.length && chosen.every((v) => choice.default.includes(v));
}
