/* A completed job's outputs: players, images, the table of files, the manifest's link and their quality. */

import { token } from './api.js';
import { $, el, fileName, setText, slug } from './dom.js';
import { formatBytes, formatDimensions, formatDuration, safeUrl, sameOrigin } from './format.js';
import { clearQuality, renderQuality } from './quality.js';

const STILL_IMAGE = /\.(jpe?g|png|webp)$/i;
const DASH_MANIFEST = /\.mpd$/i;

/** The DASH manifests of an output: a CMAF ladder has one beside its HLS playlist. */
const dashManifests = (output) => (Array.isArray(output.files) ? output.files : [])
  .filter((f) => typeof f === 'string' && DASH_MANIFEST.test(f));

/** Whether the outputs of a completed job were deleted: its timeline says so. */
export function outputsWereDeleted(current, job) {
  if (current.outputsDeleted) return true;
  if (job.state !== 'completed' || job.manifest) return false;
  return (job.timeline || []).some((entry) => /output file\(s\) deleted/.test(String(entry.note || '')));
}

/** Shows the outputs of `job` on the job page `current`, when they changed. */
export function renderOutputs(current, job) {
  const deleted = outputsWereDeleted(current, job);
  const manifest = job.state === 'completed' && !deleted ? job.manifest : null;
  // Rebuilt only when the outputs change, so players keep playing through status events.
  const key = manifest && Array.isArray(manifest.outputs)
    ? JSON.stringify(manifest.outputs.map((o) => o.key))
    : `${job.state === 'completed'}:${deleted}`;
  if (key === current.outputsKey) return;
  current.outputsKey = key;

  stopMedia(current);
  $('media').replaceChildren();
  $('outputs-body').replaceChildren();
  $('manifest-download').replaceChildren();
  $('outputs').hidden = true;
  clearQuality();
  const section = $('outputs-section');
  if (deleted) {
    section.hidden = false;
    setText('outputs-status', 'Outputs deleted.');
    return;
  }
  if (!manifest || !Array.isArray(manifest.outputs)) {
    section.hidden = job.state !== 'completed';
    setText('outputs-status', job.state === 'completed' ? 'The outputs of this job are not available.' : '');
    return;
  }
  section.hidden = false;
  setText('outputs-status', '');
  const urls = new Map();
  for (const download of job.downloads || []) {
    const url = safeUrl(download && download.url);
    if (url) urls.set(download.key, url);
  }
  renderMedia(current, job, manifest.outputs, urls);
  renderOutputTable(manifest.outputs, urls);
  renderManifestLink(manifest.outputs, urls);
  renderQuality(current, manifest, urls);
}

function figure(caption, content, note) {
  return el('figure', { className: 'output' }, content, el('figcaption', { text: caption }), note || null);
}

function player(id, label) {
  return el('video', { id, controls: true, preload: 'metadata', playsinline: true, 'aria-label': label });
}

/** Players and images, each found by what its file is. */
function renderMedia(current, job, outputs, urls) {
  const media = $('media');
  const source = fileName(job.source_key);
  const find = (test) => outputs.find((o) => typeof o.key === 'string' && test(o) && urls.has(o.key));

  const mp4 = find((o) => o.key.endsWith('.mp4'));
  if (mp4) {
    const note = el('p', { className: 'muted', role: 'status' });
    const video = player('player-mp4', `MP4 video (${mp4.preset}) of ${source}`);
    video.addEventListener('error', () => { note.textContent = 'This browser could not play the MP4 file; download it below.'; });
    video.setAttribute('src', urls.get(mp4.key));
    media.append(figure(`MP4 (${mp4.preset})`, video, note));
  }

  // Every HLS ladder gets a player: a job may have both an MPEG-TS (`hls`) and a CMAF one.
  const ladders = outputs.filter((o) => typeof o.key === 'string' && o.key.endsWith('master.m3u8') && urls.has(o.key));
  for (const ladder of ladders) {
    const note = el('p', { className: 'muted', role: 'status' });
    const cmaf = dashManifests(ladder).length > 0;
    const kind = cmaf ? 'CMAF (HLS)' : 'HLS';
    const video = player(`player-${slug(ladder.preset)}`, `${kind} stream (${ladder.preset}) of ${source}`);
    const fig = figure(`${kind} (${ladder.preset})`, video, note);
    fig.dataset.output = String(ladder.preset);
    media.append(fig);
    playHls(current, video, urls.get(ladder.key), note);
  }

  const gif = find((o) => o.key.endsWith('.gif'));
  if (gif) {
    media.append(figure(`GIF (${gif.preset})`,
      el('img', { id: 'output-gif', src: urls.get(gif.key), alt: `Animated GIF made from ${source}` })));
  }

  // A still frame is an output whose main file is an image; a storyboard's main file is its
  // WebVTT cues, and its sprite one of its other files.
  const thumbnail = find((o) => STILL_IMAGE.test(o.key));
  if (thumbnail) {
    media.append(figure('Thumbnail',
      el('img', { id: 'output-thumbnail', src: urls.get(thumbnail.key), alt: `Thumbnail frame of ${source}` })));
  }

  const storyboard = outputs.find((o) => typeof o.key === 'string' && o.key.endsWith('.vtt'));
  const sprite = storyboard && (storyboard.files || []).find((f) => STILL_IMAGE.test(f) && urls.has(f));
  if (sprite) {
    media.append(figure('Storyboard',
      el('img', { id: 'output-storyboard', src: urls.get(sprite), alt: `Storyboard of ${source}: a grid of frames across its length` })));
  }
}

/**
 * Plays the HLS master playlist with hls.js. Only the master's URL is signed, so requests to
 * this origin (variant playlists, segments) carry the token; other origins (S3) never see it.
 */
function playHls(current, video, url, note) {
  const Hls = window.Hls;
  if (Hls && Hls.isSupported()) {
    const hls = new Hls({
      enableWorker: false, // the CSP allows no blob workers
      xhrSetup(xhr, requestUrl) {
        if (!sameOrigin(requestUrl)) return;
        // hls.js calls this before it opens the request, and headers need an open one; it
        // leaves a request opened here as it is.
        if (xhr.readyState === XMLHttpRequest.UNSENT) xhr.open('GET', requestUrl, true);
        xhr.setRequestHeader('Authorization', `Bearer ${token()}`);
      },
    });
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (!data || !data.fatal) return;
      note.textContent = `The HLS stream could not be played${data.details ? ` (${data.details})` : ''}.`;
      hls.destroy();
      current.hls = (current.hls || []).filter((h) => h !== hls);
    });
    hls.loadSource(url);
    hls.attachMedia(video);
    current.hls = [...(current.hls || []), hls];
  } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
    video.setAttribute('src', url);
  } else {
    note.textContent = 'This browser cannot play HLS streams.';
  }
}

/** Stops the players of the job page `current`. */
export function stopMedia(current) {
  for (const hls of current.hls || []) hls.destroy();
  current.hls = [];
  for (const video of $('media').querySelectorAll('video')) {
    video.pause();
    video.removeAttribute('src');
    video.load(); // drops the connection of a download in progress
  }
}

function cell(label, content, header = false) {
  return el(header ? 'th' : 'td', { 'data-label': label, scope: header ? 'row' : null }, content);
}

function renderOutputTable(outputs, urls) {
  const body = $('outputs-body');
  for (const output of outputs) {
    const url = urls.get(output.key);
    const name = fileName(output.key);
    const link = url
      ? el('a', { className: 'download', href: url, download: name, text: name })
      : el('span', { text: 'not available' });
    body.append(el('tr', {},
      cell('Preset', String(output.preset), true),
      cell('Size', formatBytes(output.size)),
      cell('Duration', formatDuration(output.duration_seconds)),
      cell('Dimensions', formatDimensions(output.video)),
      cell('Download', link)));
    for (const key of dashManifests(output)) body.append(dashRow(output, key, urls.get(key)));
  }
  $('outputs').hidden = outputs.length === 0;
}

/** A CMAF ladder's DASH manifest, for DASH players (dash.js, Shaka, ExoPlayer): its own row. */
function dashRow(output, key, url) {
  const name = fileName(key);
  const link = url
    ? el('a', { className: 'download dash-manifest', href: url, download: name, text: name })
    : el('span', { text: 'not available' });
  return el('tr', { 'data-output': String(output.preset), 'data-file': 'dash' },
    cell('Preset', `${output.preset} (DASH manifest)`, true),
    cell('Size', '—'),
    cell('Duration', formatDuration(output.duration_seconds)),
    cell('Dimensions', '—'),
    cell('Download', link));
}

/** The manifest itself, which the API lists among the downloads besides the outputs. */
function renderManifestLink(outputs, urls) {
  const known = new Set(outputs.flatMap((o) => [o.key, ...(o.files || [])]));
  for (const [key, url] of urls) {
    if (!known.has(key) && key.endsWith('manifest.json')) {
      $('manifest-download').append('The job\'s manifest: ',
        el('a', { className: 'manifest-link', href: url, download: 'manifest.json', text: 'manifest.json' }));
      return;
    }
  }
}
