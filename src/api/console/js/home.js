/* The home page: the new-job form and the caller's jobs, newest first. */

import { api, authFailed, describe } from './api.js';
import { isActive, loadCatalogue } from './catalogue.js';
import { $, el, fileName, isAbort, navigate, setText, showMessage, showView, slug } from './dom.js';
import { formatDate, percentOf } from './format.js';
import { applyExtras, chosenExtras, syncExtras } from './extras.js';
import { FormError, chosenOutputs, fields, loadPresets, syncOptionGroups } from './presets.js';
import { resumable, setUploadProgress, uploadFile } from './uploads.js';

const JOBS_PAGE = 20;

let home = null; // { signal } of the home page shown
let uploading = false;

/** Shows the home page; returns it, to leave it. */
export function showHome(focus) {
  document.title = 'Jobs — media-worker console';
  showView('home-view', focus);
  const controller = new AbortController();
  home = { signal: controller.signal };
  if (!fields()) loadPresets(controller.signal);
  loadJobs(true);
  return {
    leave() {
      // Stops an upload in progress; picking the same file again resumes it.
      controller.abort();
      home = null;
    },
  };
}

// ---- submitting a job

function formError(message, field) {
  showMessage('new-job-error', message);
  if (field) field.focus();
}

function setBusy(busy) {
  uploading = busy;
  $('submit-job').disabled = busy;
  $('new-job-form').setAttribute('aria-busy', busy ? 'true' : 'false');
}

/** The loudness, caption file and watermark of the form, or null once the form said what is wrong. */
function formExtras() {
  try {
    return chosenExtras();
  } catch (err) {
    if (err instanceof FormError) {
      formError(err.message, err.field);
      return null;
    }
    throw err;
  }
}

/** Uploads the caption file and the watermark image the form names: their keys. */
async function uploadExtras(extras, signal) {
  const keys = {};
  for (const [name, what] of [['caption', 'caption file'], ['watermark', 'watermark image']]) {
    const file = extras[name] && extras[name].file;
    if (!file) continue;
    setUploadProgress(0, file.size);
    keys[name] = (await uploadFile(file, signal)).key;
    setText('upload-status', `The ${what} is uploaded.`);
  }
  return keys;
}

/** The outputs of the form, or null once the form said what is wrong. */
function formOutputs() {
  const presetFields = fields();
  if (!presetFields) {
    formError('The presets are not loaded yet; try again in a moment.', null);
    return null;
  }
  let outputs;
  try {
    outputs = chosenOutputs();
  } catch (err) {
    if (err instanceof FormError) {
      formError(err.message, err.field);
      return null;
    }
    throw err;
  }
  if (!outputs.length) {
    formError('Choose at least one output.', presetFields.length ? presetFields[0].checkbox : null);
    return null;
  }
  return outputs;
}

export async function submitJob(event) {
  event.preventDefault();
  if (uploading || !home) return;
  showMessage('new-job-error', '');
  const file = $('file').files[0] || null;
  const url = $('url').value.trim();
  if (file && url) return formError('Choose a file or enter a URL, not both.', $('url'));
  if (!file && !url) return formError('Choose a file to upload, or enter the URL of a file to fetch.', $('file'));
  if (file && file.size === 0) return formError('That file is empty.', $('file'));
  const outputs = formOutputs();
  if (!outputs) return;
  const extras = formExtras();
  if (!extras) return;

  const { signal } = home;
  setBusy(true);
  try {
    let input;
    if (file) {
      setUploadProgress(0, file.size);
      const uploaded = await uploadFile(file, signal);
      input = { key: uploaded.key };
      setText('upload-status', 'Upload complete. Starting the job…');
    } else {
      input = { url };
      setText('upload-status', 'Starting the job…');
    }
    const body = { input, outputs };
    applyExtras(body, extras, await uploadExtras(extras, signal));
    setText('upload-status', 'Starting the job…');
    const job = await api('POST', '/v1/jobs', { body, signal });
    resetNewJobForm();
    navigate(`#/jobs/${encodeURIComponent(job.job_id)}`);
  } catch (err) {
    if (isAbort(err)) {
      setText('upload-status', 'The upload was paused. Pick the same file and submit again to resume it.');
    } else if (!authFailed(err)) {
      setText('upload-status', '');
      formError(describe(err), null);
    }
  } finally {
    setBusy(false);
  }
}

function resetNewJobForm() {
  $('new-job-form').reset();
  syncOptionGroups();
  syncExtras();
  setUploadProgress(0, 0);
  setText('upload-status', '');
  showMessage('new-job-error', '');
}

export function fileChosen() {
  setUploadProgress(0, 0);
  const file = $('file').files[0];
  setText('upload-status', resumable(file) ? 'Part of this file was uploaded earlier: only the rest will be sent.' : '');
}

// ---- the jobs list

let listCursor = null;
let listRequest = 0; // only the newest request's answer is shown

export async function loadJobs(reset) {
  if (!home) return;
  const request = ++listRequest;
  const params = new URLSearchParams({ limit: String(JOBS_PAGE) });
  const filter = $('state-filter').value;
  if (!reset && listCursor) params.set('cursor', listCursor);
  if (filter) params.set('state', filter);
  const more = $('load-more');
  more.disabled = true;
  setText('jobs-status', 'Loading the jobs…');
  showMessage('jobs-error', '');
  try {
    // The catalogue says which states are active (their jobs show a percentage); the list
    // shows without it when it cannot be read.
    const [data] = await Promise.all([
      api('GET', `/v1/jobs?${params}`, { signal: home.signal }),
      loadCatalogue().catch(() => null),
    ]);
    if (request !== listRequest) return;
    const list = $('jobs');
    if (reset) list.replaceChildren();
    for (const job of (data && data.jobs) || []) list.append(jobItem(job));
    listCursor = (data && data.next_cursor) || null;
    more.hidden = !listCursor;
    const empty = list.children.length === 0;
    setText('jobs-status', empty ? (filter ? `No ${filter} jobs.` : 'No jobs yet.') : '');
  } catch (err) {
    if (isAbort(err) || authFailed(err) || request !== listRequest) return;
    setText('jobs-status', '');
    showMessage('jobs-error', `The jobs could not be loaded. ${describe(err)}`);
  } finally {
    if (request === listRequest) more.disabled = false;
  }
}

function jobItem(job) {
  const state = String(job.state || '');
  const link = el('a', { className: 'job-link', href: `#/jobs/${encodeURIComponent(job.job_id)}` },
    el('span', { className: 'job-name', text: fileName(job.source_key) }),
    el('span', { className: 'job-meta' },
      el('span', { className: `state state-${slug(state)}`, text: state }),
      isActive(state) ? el('span', { text: ` ${Math.floor(percentOf(job.progress))}%` }) : null,
      el('span', { className: 'sep', 'aria-hidden': 'true', text: ' · ' }),
      el('time', { datetime: job.created_at, text: formatDate(job.created_at) })));
  const presets = (job.outputs || []).map((o) => o.preset).filter(Boolean).join(', ');
  return el('li', { 'data-job-id': job.job_id }, link,
    presets ? el('span', { className: 'job-presets', text: presets }) : null);
}
