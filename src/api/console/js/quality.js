/*
 * A completed job's quality: the scores of each rendition (the manifest's `quality` blocks),
 * VMAF per second (the sidecar `quality.json`, fetched from its download URL), rate against
 * quality per HLS ladder (per codec of a CMAF ladder), a per-title ladder's decisions and the
 * QC findings.
 *
 * The table comes from the manifest alone, so it shows even when the sidecar cannot be read;
 * the chart then gives way to a short message.
 */

import { $, el, isAbort } from './dom.js';
import { rateChart, swatch, vmafChart } from './charts.js';
import { formatKbps, formatScore, formatSeconds } from './format.js';

// Each rendering takes a number; a sidecar that arrives after the page moved on is dropped.
let generation = 0;

const finite = (value) => typeof value === 'number' && Number.isFinite(value);
const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
const isLadder = (output) => typeof output.key === 'string' && output.key.endsWith('.m3u8');

/** Empties and hides the quality section. */
export function clearQuality() {
  generation += 1;
  $('quality').hidden = true;
  for (const id of ['quality-qc', 'quality-body', 'quality-notes', 'quality-chart', 'quality-legend',
    'quality-summary', 'quality-rate', 'quality-rate-legend', 'quality-ladder', 'quality-download']) {
    $(id).replaceChildren();
  }
  $('quality-chart-status').textContent = '';
  $('quality-scores').hidden = true;
  $('quality-series').hidden = true;
  $('quality-rate-figure').hidden = true;
}

/** Shows the quality of `manifest` (a completed job's) on the job page `current`. */
export function renderQuality(current, manifest, urls) {
  clearQuality();
  const outputs = Array.isArray(manifest.outputs) ? manifest.outputs.filter((o) => o && typeof o === 'object') : [];
  const rows = scoredRenditions(outputs);
  const ladders = outputs.filter((o) => o.ladder && typeof o.ladder === 'object');
  const qc = manifest.qc && typeof manifest.qc === 'object' ? manifest.qc : null;
  if (!rows.length && !ladders.length && !qc) return;
  $('quality').hidden = false; // shown first: the charts take the width they are given
  if (qc) renderQc(qc);
  if (rows.length) {
    $('quality-scores').hidden = false;
    renderTable(rows);
    renderNotes(rows);
    renderRate(outputs);
    const url = typeof manifest.quality_key === 'string' ? urls.get(manifest.quality_key) : null;
    loadSeries(current, url, generation);
  }
  if (ladders.length) renderLadders(ladders, rows);
}

/** One row per scored rendition, in manifest order (an HLS ladder's largest rung first). */
function scoredRenditions(outputs) {
  return outputs.flatMap((output) => (Array.isArray(output.quality) ? output.quality : [])
    .filter((entry) => entry && typeof entry === 'object')
    .map((entry) => ({ output: String(output.preset || ''), rendition: String(entry.rendition || ''), entry })));
}

// ---- the table

function cell(text, header = false) {
  return el(header ? 'th' : 'td', { scope: header ? 'row' : null, text });
}

function renderTable(rows) {
  $('quality-body').replaceChildren(...rows.map(({ output, rendition, entry }) => {
    const vmaf = entry.vmaf || {};
    const bitrate = entry.bitrate || {};
    return el('tr', { 'data-output': output, 'data-rendition': rendition },
      cell(output, true),
      cell(rendition),
      cell(formatScore(vmaf.mean)),
      cell(formatScore(vmaf.p5)),
      cell(formatScore(vmaf.min)),
      cell(formatScore((entry.psnr || {}).y_mean)),
      cell(formatScore((entry.ssim || {}).mean, 3)),
      cell(formatKbps(bitrate.average_kbps)),
      cell(formatKbps(bitrate.peak_kbps)));
  }));
}

/** How the scores were made (once per distinct way), and a split job's seams per rendition. */
function renderNotes(rows) {
  const notes = new Set();
  for (const { entry } of rows) {
    const how = [`VMAF model ${entry.model || 'unknown'}`];
    if (entry.scored_at) how.push(`scored at ${entry.scored_at}`);
    if (finite(entry.subsample) && entry.subsample > 1) how.push(`every ${ordinal(entry.subsample)} frame`);
    if (finite(entry.frames_scored)) how.push(plural(entry.frames_scored, 'frame') + ' scored');
    const peak = entry.bitrate && finite(entry.bitrate.window_seconds) ? `; peak rate over ${entry.bitrate.window_seconds} s windows` : '';
    notes.add(`${how.join(', ')}${peak}.`);
  }
  // A split job's seams, once per distinct finding with the renditions that share it.
  const seams = new Map();
  for (const { output, rendition, entry } of rows) {
    const seam = entry.seams;
    if (!seam || !finite(seam.count)) continue;
    const worst = finite(seam.worst_at) ? `, the worst at ${formatSeconds(seam.worst_at)} (VMAF min ${formatScore(seam.vmaf_min)})` : '';
    const text = `${plural(seam.count, 'seam')} between segments${worst}`;
    seams.set(text, [...(seams.get(text) || []), output === rendition ? rendition : `${output} ${rendition}`]);
  }
  for (const [text, names] of seams) notes.add(`${names.join(', ')}: ${text}.`);
  $('quality-notes').replaceChildren(...[...notes].map((text) => el('li', { text })));
}

function ordinal(n) {
  const suffix = n % 100 >= 11 && n % 100 <= 13 ? 'th' : ({ 1: 'st', 2: 'nd', 3: 'rd' }[n % 10] || 'th');
  return `${n}${suffix}`;
}

// ---- VMAF per second, from the sidecar

/** Fetches the sidecar (a signed URL: no token needed) and draws its series. */
async function loadSeries(current, url, gen) {
  const status = $('quality-chart-status');
  if (!url) {
    status.textContent = 'No per-second scores were kept for this job, so there is no chart.';
    return;
  }
  $('quality-download').append('Per-second scores: ',
    el('a', { className: 'download', href: url, download: 'quality.json', text: 'quality.json' }));
  status.textContent = 'Loading the per-second scores…';
  let sidecar;
  try {
    const response = await fetch(url, { signal: current.signal, cache: 'no-store', credentials: 'omit' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    sidecar = await response.json();
  } catch (err) {
    if (isAbort(err) || gen !== generation) return;
    status.textContent = `The per-second scores could not be loaded (${err.message || 'network error'}); the table above has each rendition's summary.`;
    return;
  }
  if (gen !== generation || current.signal.aborted) return;
  const { series, seams } = readSidecar(sidecar);
  if (!series.length) {
    status.textContent = 'The per-second scores file has no scores to chart.';
    return;
  }
  status.textContent = '';
  drawSeries(series, seams);
}

/** The series and seams of a sidecar; anything malformed is left out. */
function readSidecar(sidecar) {
  const renditions = sidecar && Array.isArray(sidecar.renditions) ? sidecar.renditions : [];
  const series = [];
  const seams = new Map(); // by time: the same seam in every rendition, kept at its worst
  for (const r of renditions) {
    if (!r || !Array.isArray(r.vmaf_per_second)) continue;
    const output = String(r.output || '');
    const rendition = String(r.rendition || '');
    const label = !output || output === rendition ? rendition : `${output} ${rendition}`;
    series.push({ label, output, rendition, values: r.vmaf_per_second.map((v) => (finite(v) ? v : null)) });
    for (const seam of Array.isArray(r.seams) ? r.seams : []) {
      if (!seam || !finite(seam.at)) continue;
      const key = seam.at.toFixed(2);
      const known = seams.get(key);
      const vmafMin = finite(seam.vmaf_min) ? seam.vmaf_min : null;
      if (!known || (vmafMin !== null && (known.vmafMin === null || vmafMin < known.vmafMin))) seams.set(key, { at: seam.at, vmafMin });
    }
  }
  return { series, seams: [...seams.values()].sort((a, b) => a.at - b.at) };
}

const chartWidth = (id) => Math.round(Math.max(320, Math.min(760, $(id).clientWidth || 640)));

function drawSeries(series, seams) {
  $('quality-series').hidden = false;
  $('quality-chart').replaceChildren(vmafChart('quality-vmaf-chart', chartWidth('quality-chart'), series, seams));
  $('quality-legend').replaceChildren(...series.map((s, index) => el('li', {}, swatch(index), s.label)));
  $('quality-summary').replaceChildren(...series.map((s) => el('li', { text: describeSeries(s) })));
}

/** A series in words, for screen readers: its length, mean, lowest and highest second. */
function describeSeries(s) {
  const scored = s.values.map((v, second) => ({ v, second })).filter((p) => p.v !== null);
  if (!scored.length) return `${s.label}: no seconds scored.`;
  const low = scored.reduce((a, b) => (b.v < a.v ? b : a));
  const high = scored.reduce((a, b) => (b.v > a.v ? b : a));
  const mean = scored.reduce((sum, p) => sum + p.v, 0) / scored.length;
  return `${s.label}: ${plural(scored.length, 'second')} scored, mean VMAF ${mean.toFixed(1)}, `
    + `lowest ${low.v.toFixed(1)} at ${low.second}–${low.second + 1} s, highest ${high.v.toFixed(1)} at ${high.second}–${high.second + 1} s.`;
}

// ---- rate against quality, per HLS ladder (per codec of a CMAF ladder)

/** A CMAF rendition's codec family from its name (`av1-360p`), or null for other names. */
const codecOf = (rendition) => (/^([a-z0-9]+)-\d+p$/.exec(rendition) || [])[1] || null;

/** An output's rungs as series: one, or one per codec family when its renditions name one. */
function rateSeries(output) {
  const preset = String(output.preset || '');
  const points = (Array.isArray(output.quality) ? output.quality : [])
    .filter((q) => q && q.vmaf && q.bitrate && finite(q.vmaf.mean) && finite(q.bitrate.average_kbps))
    .map((q) => ({ rendition: String(q.rendition || ''), kbps: q.bitrate.average_kbps, vmaf: q.vmaf.mean }));
  const families = new Map();
  for (const point of points) {
    const codec = codecOf(point.rendition);
    const label = codec ? `${preset} ${codec}` : preset;
    if (!families.has(label)) families.set(label, { label, output: preset, points: [] });
    families.get(label).points.push(point);
  }
  return [...families.values()];
}

function renderRate(outputs) {
  const ladders = outputs.filter(isLadder).flatMap(rateSeries).filter((ladder) => ladder.points.length);
  if (!ladders.length) return;
  $('quality-rate-figure').hidden = false;
  $('quality-rate').replaceChildren(rateChart('quality-rate-chart', chartWidth('quality-rate'), ladders));
  $('quality-rate-legend').replaceChildren(...ladders.map((l, index) => el('li', { 'data-series': l.label },
    swatch(index, true), `${l.label} (${plural(l.points.length, 'rung')})`)));
}

// ---- a per-title ladder's decisions

const REASONS = {
  target: 'the highest CRF that meets the target',
  resolution_limited: 'limited by its resolution: more bits would not reach the target',
  smallest_rung: 'the smallest rung keeps CRF 23 (what slow networks get)',
};
const reasonText = (reason) => REASONS[reason] || String(reason || '').replace(/_/g, ' ');

function renderLadders(outputs, rows) {
  const parts = outputs.flatMap((output) => {
    const ladder = output.ladder;
    const target = ladder.target && finite(ladder.target.vmaf) ? `VMAF ${ladder.target.vmaf}` : 'not given';
    const rungs = (Array.isArray(ladder.rungs) ? ladder.rungs : []).filter((r) => r && typeof r === 'object');
    const dropped = (Array.isArray(ladder.dropped) ? ladder.dropped : []).filter((r) => r && typeof r === 'object');
    const measured = (name) => rows.find((r) => r.output === String(output.preset || '') && r.rendition === name);
    const items = [
      el('h3', { text: `Per-title ladder of ${output.preset}` }),
      el('p', { text: `Target: ${target}.` }),
      el('ul', { className: 'ladder-rungs' }, ...rungs.map((rung) => el('li', { text: rungText(rung, measured(String(rung.name || ''))) }))),
    ];
    if (dropped.length) {
      items.push(el('p', { text: `Dropped ${dropped.length === 1 ? 'rung' : 'rungs'}:` }),
        el('ul', { className: 'ladder-dropped' },
          ...dropped.map((rung) => el('li', { text: `${rung.name || 'a rung'}: ${reasonText(rung.reason)}.` }))));
    }
    return items;
  });
  $('quality-ladder').replaceChildren(...parts);
}

function rungText(rung, measured) {
  const name = `${rung.name || 'a rung'}${finite(rung.height) ? ` (${rung.height} lines)` : ''}`;
  const predicted = finite(rung.predicted_vmaf)
    ? `, predicted VMAF ${formatScore(rung.predicted_vmaf)} at ${formatKbps(rung.predicted_kbps)} kb/s` : '';
  const capped = rung.capped ? ', held to the rung\'s rate cap' : '';
  const reason = rung.reason ? `: ${reasonText(rung.reason)}` : '';
  const q = measured && measured.entry;
  const scored = q && q.vmaf && finite(q.vmaf.mean)
    ? ` Measured: VMAF ${formatScore(q.vmaf.mean)} at ${formatKbps(q.bitrate && q.bitrate.average_kbps)} kb/s.` : '';
  return `${name}: CRF ${finite(rung.crf) ? rung.crf : '—'}${predicted}${capped}${reason}.${scored}`;
}

// ---- QC

const VERDICTS = { pass: 'Passed', warn: 'Passed with warnings', fail: 'Failed' };
const ACTIONS = { warn: 'Warning', fail: 'Failure' };

function renderQc(qc) {
  const verdict = String(qc.verdict || 'unknown');
  const findings = (Array.isArray(qc.findings) ? qc.findings : []).filter((f) => f && typeof f === 'object');
  const slug = verdict.replace(/[^a-z]/g, '');
  $('quality-qc').replaceChildren(
    el('h3', { text: 'Quality checks' }),
    el('p', {}, el('span', { className: `verdict verdict-${slug}`, text: VERDICTS[verdict] || verdict }),
      findings.length ? ` ${plural(findings.length, 'finding')}:` : ' No findings.'),
    findings.length ? el('ul', { className: 'findings' }, ...findings.map(findingItem)) : null);
}

function findingItem(finding) {
  const action = String(finding.action || '');
  const spans = (Array.isArray(finding.spans) ? finding.spans : []).filter((s) => Array.isArray(s) && finite(s[0]) && finite(s[1]));
  const shown = spans.slice(0, 10).map(([start, end]) => `${formatSeconds(start)}–${formatSeconds(end)}`);
  const more = spans.length > shown.length ? ` and ${spans.length - shown.length} more` : '';
  return el('li', { className: `finding finding-${action.replace(/[^a-z]/g, '')}` },
    el('span', { className: 'finding-action', text: ACTIONS[action] || action || 'Note' }),
    ' ',
    el('span', { className: 'finding-rule', text: String(finding.rule || '') }),
    `: ${finding.message || ''}`,
    spans.length > 1 ? el('span', { className: 'finding-spans', text: ` (at ${shown.join(', ')}${more})` }) : null);
}
