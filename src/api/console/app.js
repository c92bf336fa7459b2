/*
 * media-worker console: the browser front-end of media-api.
 *
 * Plain ES2020 modules, no build step and no framework: media-api embeds these files and serves
 * them under a strict Content-Security-Policy, so there is no inline code anywhere, and every
 * string that comes from the API or the user (file names, keys, ids, error texts, URLs) reaches
 * the page through textContent or setAttribute on elements made with document.createElement.
 *
 * The server's rules (presets, the range of each option, which job states are active) come
 * from GET /v1/presets; the page keeps no copy of them.
 *
 * Modules (js/): dom and format (helpers), api (calls and errors), catalogue (the server's
 * rules), session (signing in and out, routing), home, presets and uploads (the new-job form
 * and the jobs list; extras: loudness, a caption file and a watermark), job, events, confirm,
 * outputs and recaption (the job page; captions added to a completed cmaf ladder), quality and
 * charts (a completed job's scores, drawn as SVG).
 */

import { confirmThen } from './js/confirm.js';
import { $ } from './js/dom.js';
import { syncExtras } from './js/extras.js';
import { fileChosen, loadJobs, submitJob } from './js/home.js';
import { deleteJob } from './js/job.js';
import { addCaptions } from './js/recaption.js';
import { route, signIn, signOut } from './js/session.js';

function start() {
  $('sign-in-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', () => signOut(''));
  $('new-job-form').addEventListener('submit', submitJob);
  $('file').addEventListener('change', fileChosen);
  $('presets').addEventListener('change', syncExtras);
  $('add-captions-form').addEventListener('submit', addCaptions);
  $('state-filter').addEventListener('change', () => loadJobs(true));
  $('refresh-jobs').addEventListener('click', () => loadJobs(true));
  $('load-more').addEventListener('click', () => loadJobs(false));
  $('cancel-job').addEventListener('click', (e) =>
    confirmThen(e.currentTarget, 'Click again to cancel the job', () => deleteJob($('cancel-job'))));
  $('delete-outputs').addEventListener('click', (e) =>
    confirmThen(e.currentTarget, 'Click again to delete the outputs', () => deleteJob($('delete-outputs'))));
  window.addEventListener('hashchange', () => route(true));
  route(false);
}

start();
