/* The job page: one job, followed live until it ends, then its outputs. */

import { ApiError, api, authFailed, describe, errorFrom, jobPath, token } from './api.js';
import { isActive, loadCatalogue } from './catalogue.js';
import { disarm, disarmAll } from './confirm.js';
import { $, el, fileName, isAbort, setText, showMessage, showView, sleep, slug } from './dom.js';
import { readEvents } from './events.js';
import { formatDate, percentOf, sentence } from './format.js';
import { outputsWereDeleted, renderOutputs, stopMedia } from './outputs.js';
import { clearQuality } from './quality.js';
import { clearAddCaptions, renderAddCaptions } from './recaption.js';

const RECONNECT_MS = 2000;

let jobPage = null; // { id, controller, signal, hls (the players of its HLS ladders), last, outputsKey, outputsDeleted }

/** Shows the page of job `id`; returns it, to leave it. */
export function showJob(id, focus) {
  document.title = `Job ${id} — media-worker console`;
  resetJobView(id);
  showView('job', focus);
  const controller = new AbortController();
  const current = {
    id, controller, signal: controller.signal, hls: [], last: null, outputsKey: null, outputsDeleted: false,
  };
  jobPage = current;
  open(current);
  return {
    leave() {
      controller.abort(); // ends the event stream and any request in flight
      stopMedia(current);
      disarmAll();
      if (jobPage === current) jobPage = null;
    },
  };
}

/** Reads the job, and follows it while the catalogue says its state is active. */
async function open(current) {
  try {
    await loadCatalogue();
  } catch (err) {
    if (current.signal.aborted || authFailed(err)) return;
    // Without the states the page cannot tell whether the job may still change: it shows the
    // job as it is now.
    showMessage('job-error', `The job states could not be loaded. ${describe(err)}`);
  }
  const job = await loadJob(current);
  if (job && isActive(job.state)) follow(current);
}

function resetJobView(id) {
  setText('job-id', id);
  for (const field of ['job-source', 'job-stage', 'job-attempt', 'job-live', 'job-connection', 'action-status', 'outputs-status']) {
    setText(field, '');
  }
  const state = $('job-state');
  state.textContent = '';
  state.className = 'state';
  $('job-progress').value = 0;
  setText('job-progress-text', '0%');
  setText('job-connection', 'Loading the job…');
  $('timeline').replaceChildren();
  showMessage('job-error', '');
  showMessage('action-error', '');
  $('cancel-job').hidden = true;
  $('delete-outputs').hidden = true;
  $('outputs-section').hidden = true;
  $('media').replaceChildren();
  $('outputs-body').replaceChildren();
  $('outputs').hidden = true;
  $('manifest-download').replaceChildren();
  clearQuality();
  clearAddCaptions();
}

/** Reads the job view and shows it; null when it could not be read. */
async function loadJob(current) {
  try {
    const job = await api('GET', jobPath(current.id), { signal: current.signal });
    renderJob(current, job);
    setText('job-connection', '');
    return job;
  } catch (err) {
    if (isAbort(err) || authFailed(err)) return null;
    setText('job-connection', '');
    showMessage('job-error', describe(err));
    return null;
  }
}

/** Follows the job's Server-Sent Events until it ends. */
async function follow(current) {
  const { signal } = current;
  while (!signal.aborted) {
    let ended = false;
    try {
      const response = await fetch(`${jobPath(current.id)}/events`, {
        headers: { Authorization: `Bearer ${token()}`, Accept: 'text/event-stream' },
        cache: 'no-store',
        signal,
      });
      if (!response.ok) throw await errorFrom(response);
      setText('job-connection', '');
      await readEvents(response.body, (name, data) => {
        if (name === 'status') {
          const job = JSON.parse(data);
          renderJob(current, job);
          ended = !isActive(job.state);
        } else if (name === 'gone') {
          ended = true;
        }
      });
    } catch (err) {
      if (signal.aborted || isAbort(err) || authFailed(err)) return;
      if (err instanceof ApiError && (err.status === 400 || err.status === 404)) {
        showMessage('job-error', describe(err));
        return;
      }
      setText('job-connection', 'Live updates were interrupted; reconnecting…');
    }
    if (ended) break;
    // The stream ended early (an instance shutting down, a dropped link): reconnect, and the
    // current state comes first.
    await sleep(RECONNECT_MS, signal);
  }
  if (signal.aborted) return;
  // The job ended: the job view has the manifest and fresh download URLs.
  await loadJob(current);
}

function renderJob(current, job) {
  if (current.signal.aborted || !job) return;
  const previous = current.last;
  current.last = job;
  const name = fileName(job.source_key);
  document.title = `${name} (${job.state}) — media-worker console`;
  setText('job-id', job.job_id);
  const source = $('job-source');
  source.textContent = name;
  source.setAttribute('title', String(job.source_key || ''));
  const state = $('job-state');
  state.textContent = job.state;
  state.className = `state state-${slug(job.state)}`;
  setText('job-stage', job.stage);
  const percent = job.state === 'completed' ? 100 : percentOf(job.progress);
  $('job-progress').value = percent;
  setText('job-progress-text', `${Math.floor(percent)}%`);
  setText('job-attempt', `attempt ${job.attempt} of ${job.max_attempts}`);
  renderTimeline(job.timeline || []);
  showMessage('job-error', job.error ? `${sentence(job.error.message)} (code: ${job.error.code})` : '');
  announce(previous, job);
  renderButtons(job);
  renderOutputs(current, job);
  renderAddCaptions(current, job, outputsWereDeleted(current, job));
}

/** Tells screen readers about changes of state or stage (not every percent). */
function announce(previous, job) {
  if (!previous) return;
  let text = '';
  if (previous.state !== job.state) {
    if (job.state === 'completed') text = 'The job completed. Its outputs are below.';
    else if (job.state === 'failed') text = `The job failed. ${job.error ? sentence(job.error.message) : ''}`;
    else if (job.state === 'cancelled') text = 'The job was cancelled.';
    else if (job.state === 'retrying') text = 'The attempt failed; the job will be tried again.';
    else text = `The job is ${job.state}, stage ${job.stage}.`;
  } else if (previous.stage !== job.stage) {
    text = `Stage: ${job.stage}.`;
  }
  if (text) setText('job-live', text.trim());
}

function renderTimeline(entries) {
  const sep = () => el('span', { className: 'sep', 'aria-hidden': 'true', text: ' · ' });
  const items = entries.map((entry) => {
    const item = el('li', {},
      el('span', { className: 'tl-stage', text: entry.stage }),
      sep(),
      el('span', { className: `state state-${slug(entry.state)}`, text: entry.state }),
      sep(),
      el('span', { text: `attempt ${entry.attempt}` }),
      sep(),
      el('time', { datetime: entry.at, text: formatDate(entry.at, true) }));
    if (entry.worker) item.append(el('span', { className: 'tl-worker', text: ` on ${entry.worker}` }));
    if (entry.note) item.append(el('span', { className: 'tl-note', text: entry.note }));
    return item;
  });
  $('timeline').replaceChildren(...items);
}

const hasOutputs = (job) => Boolean(job.manifest && Array.isArray(job.manifest.outputs) && job.manifest.outputs.length);

function renderButtons(job) {
  const active = isActive(job.state);
  setButton($('cancel-job'), active);
  setButton($('delete-outputs'), !active && hasOutputs(job));
}

function setButton(button, shown) {
  if (!shown) disarm(button);
  button.hidden = !shown;
}

/** Cancels the job shown, or deletes its outputs (the API decides by the job's state). */
export async function deleteJob(button) {
  const current = jobPage;
  if (!current) return;
  button.disabled = true;
  showMessage('action-error', '');
  setText('action-status', button.id === 'cancel-job' ? 'Cancelling the job…' : 'Deleting the outputs…');
  try {
    const outcome = await api('DELETE', jobPath(current.id), { signal: current.signal });
    if (outcome && outcome.action === 'outputs_deleted') {
      const count = Array.isArray(outcome.deleted) ? outcome.deleted.length : 0;
      current.outputsDeleted = true;
      setText('action-status', `Deleted ${count} file${count === 1 ? '' : 's'}.`);
    } else {
      setText('action-status', 'The job was cancelled.');
    }
  } catch (err) {
    if (isAbort(err) || authFailed(err)) return;
    setText('action-status', '');
    showMessage('action-error', describe(err));
  } finally {
    button.disabled = false;
  }
  await loadJob(current);
}
