/*
 * The job page's "Add captions" form: a completed job with a `cmaf` output gets a caption file
 * (uploaded as the source is) added by POST /v1/jobs/{id}/captions, which makes a packaging job;
 * the page then follows that job.
 */

import { api, authFailed, describe, jobPath } from './api.js';
import { $, isAbort, navigate, setText, showMessage } from './dom.js';
import { captionFileProblem, languageProblem } from './extras.js';
import { setUploadProgress, uploadFile } from './uploads.js';

const VIEW = { status: 'recaption-status', bar: 'recaption-progress', percent: 'recaption-progress-text' };

let target = null; // { id, signal } of the job page whose form is shown
let sending = false;

const hasCmaf = (job) => Boolean(job.manifest && Array.isArray(job.manifest.outputs)
  && job.manifest.outputs.some((output) => output && output.preset === 'cmaf'));

/** Offers the form on the page `current` when its job completed with a `cmaf` output still stored. */
export function renderAddCaptions(current, job, deleted) {
  const shown = job.state === 'completed' && !deleted && hasCmaf(job);
  // Already offered on this page: what the user typed stays.
  if (shown && target && target.signal === current.signal) return;
  target = shown ? { id: current.id, signal: current.signal } : null;
  $('add-captions').hidden = !shown;
}

/** Hides the form (another page, or a job page being reset). */
export function clearAddCaptions() {
  target = null;
  $('add-captions').hidden = true;
  resetForm();
}

function resetForm() {
  $('add-captions-form').reset();
  setUploadProgress(0, 0, VIEW);
  setText(VIEW.status, '');
  showMessage('add-captions-error', '');
}

function refuse(message, field) {
  showMessage('add-captions-error', message);
  if (field) field.focus();
}

/** Uploads the caption file, asks for the packaging job and goes to its page. */
export async function addCaptions(event) {
  event.preventDefault();
  const page = target;
  if (sending || !page) return;
  showMessage('add-captions-error', '');
  const file = $('recaption-file').files[0] || null;
  if (!file) return refuse('Choose a caption file.', $('recaption-file'));
  const fileProblem = captionFileProblem(file);
  if (fileProblem) return refuse(fileProblem, $('recaption-file'));
  const language = $('recaption-language').value.trim();
  const problem = languageProblem(language);
  if (problem) return refuse(problem, $('recaption-language'));

  sending = true;
  $('add-captions-submit').disabled = true;
  try {
    setUploadProgress(0, file.size, VIEW);
    const uploaded = await uploadFile(file, page.signal, VIEW);
    setText(VIEW.status, 'Upload complete. Starting the packaging job…');
    const body = { captions: [{ key: uploaded.key, language }], replace: $('recaption-replace').checked };
    const job = await api('POST', `${jobPath(page.id)}/captions`, { body, signal: page.signal });
    navigate(`#/jobs/${encodeURIComponent(job.job_id)}`);
  } catch (err) {
    if (isAbort(err) || authFailed(err)) return;
    setText(VIEW.status, '');
    refuse(describe(err), null);
  } finally {
    sending = false;
    $('add-captions-submit').disabled = false;
  }
}
