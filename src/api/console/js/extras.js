/*
 * The new-job form's job-wide options besides the outputs: loudness, a caption file for a
 * `cmaf` ladder and a watermark image. The files go up through the same uploads as the source;
 * the job then names their keys. The API judges every value; the form only catches what is
 * plainly wrong before anything is uploaded.
 */

import { $ } from './dom.js';
import { FormError } from './presets.js';

const CMAF_PRESET = 'cmaf';

/** A language tag of RFC 5646's shape, as loosely as the API's first check. */
const LANGUAGE_TAG = /^[A-Za-z][A-Za-z0-9-]{1,34}$/;

const CAPTION_FILE = /\.(srt|vtt|webvtt|scc)$/i;
const IMAGE_FILE = /\.(png|jpe?g|webp)$/i;
const IMAGE_TYPE = /^image\/(png|jpeg|webp)$/i;

/** `loudness` of the job for each choice of the select; no entry: off. */
const LOUDNESS = {
  streaming: { target: -16 },
  broadcast: { target: -23 },
  // What -16 LUFS would take, reported; the audio is left as it is.
  measure: { target: -16, mode: 'measure' },
};

/** The message for a language field's value, or '' when it may be sent. */
export function languageProblem(language) {
  if (!language) return 'Enter the language of the captions, such as en or pt-BR.';
  if (!LANGUAGE_TAG.test(language)) return `"${language}" is not a language tag such as en or pt-BR.`;
  return '';
}

/** The message for a caption file, or '' when it may be sent. */
export function captionFileProblem(file) {
  if (file.size === 0) return 'That caption file is empty.';
  if (!CAPTION_FILE.test(file.name)) return 'Caption files are SubRip (.srt), WebVTT (.vtt) or SCC (.scc).';
  return '';
}

const cmafBox = () => document.querySelector(`input[name=preset][value='${CMAF_PRESET}']`);

/** Shows the caption fields while a `cmaf` ladder is chosen. */
export function syncExtras() {
  const box = cmafBox();
  $('cmaf-captions').hidden = !(box && box.checked);
}

function readCaption() {
  const box = cmafBox();
  const file = $('caption-file').files[0] || null;
  if (!box || !box.checked || !file) return null;
  const fileProblem = captionFileProblem(file);
  if (fileProblem) throw new FormError(fileProblem, $('caption-file'));
  const language = $('caption-language').value.trim();
  const problem = languageProblem(language);
  if (problem) throw new FormError(problem, $('caption-language'));
  return { file, language };
}

function readWatermark() {
  const file = $('watermark-file').files[0] || null;
  if (!file) return null;
  if (file.size === 0) throw new FormError('That watermark image is empty.', $('watermark-file'));
  if (!IMAGE_TYPE.test(file.type || '') && !IMAGE_FILE.test(file.name)) {
    throw new FormError('The watermark is a PNG, JPEG or WebP image.', $('watermark-file'));
  }
  const input = $('watermark-opacity');
  const raw = input.value.trim();
  const opacity = raw === '' ? 1 : Number(raw);
  if ((input.validity && input.validity.badInput) || !Number.isFinite(opacity) || opacity < 0 || opacity > 1) {
    throw new FormError('The watermark\'s opacity is a number from 0 to 1.', input);
  }
  return { file, position: $('watermark-position').value, opacity };
}

/**
 * What the form asks besides the outputs: `{ loudness, caption: {file, language},
 * watermark: {file, position, opacity} }`, each null when not asked. Throws a FormError.
 */
export function chosenExtras() {
  const loudness = LOUDNESS[$('loudness').value] || null;
  return { loudness: loudness ? { ...loudness } : null, caption: readCaption(), watermark: readWatermark() };
}

/** Adds the uploaded files' keys and the loudness to the job's `body`. */
export function applyExtras(body, extras, keys) {
  if (extras.loudness) body.loudness = extras.loudness;
  if (keys.caption) {
    const cmaf = body.outputs.find((output) => output.preset === CMAF_PRESET);
    if (cmaf) cmaf.captions = [{ key: keys.caption, language: extras.caption.language }];
  }
  if (keys.watermark) {
    const { position, opacity } = extras.watermark;
    body.watermark = { key: keys.watermark, position, opacity };
  }
}
