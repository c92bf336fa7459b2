/*
 * The quality charts, drawn as SVG elements made with createElementNS: no markup, no inline
 * style (the page's policy refuses it); classes in quality.css and SVG presentation attributes
 * style them. Each chart is an image with a title and a description for screen readers; the
 * numbers behind it are also on the page as text.
 */

const SVG_NS = 'http://www.w3.org/2000/svg';
const MARGIN = { top: 14, right: 18, bottom: 42, left: 50 };
const HEIGHT = 260;
/** Series styles (quality.css): told apart by their dash pattern too, never by colour alone. */
const SERIES_STYLES = 6;

/** An SVG element with attributes (`text` sets textContent, `className` the class). */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (name === 'text') node.textContent = String(value);
    else if (name === 'className') node.setAttribute('class', value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

const round = (value) => Math.round(value * 10) / 10;
const finite = (value) => typeof value === 'number' && Number.isFinite(value);

/** The VMAF axis: 0-100, or zoomed to the tens below the lowest value when all are high. */
function vmafRange(values) {
  const low = values.reduce((lowest, v) => (finite(v) && v < lowest ? v : lowest), Infinity);
  if (low === Infinity || low < 40) return { min: 0, max: 100, step: 20 };
  const min = Math.min(90, Math.max(0, Math.floor((low - 5) / 10) * 10));
  const span = 100 - min;
  return { min, max: 100, step: span <= 10 ? 2 : span <= 30 ? 5 : 10 };
}

/** A round step (1, 2 or 5 times a power of ten) giving at most `count` ticks over `span`. */
function niceStep(span, count) {
  const raw = span > 0 ? span / count : 1;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * magnitude).find((step) => step >= raw) || raw;
}

/** Ticks of a time axis in seconds: whole seconds, or whole minutes on long titles. */
function timeTicks(max) {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];
  const step = steps.find((s) => max / s <= 8) || niceStep(max, 8);
  const minutes = max >= 180;
  const label = (t) => (minutes ? `${Math.floor(t / 60)}:${String(Math.round(t % 60)).padStart(2, '0')}` : String(t));
  return { step, label, title: minutes ? 'Time (min:s)' : 'Time (s)' };
}

function ticks(min, max, step) {
  const values = [];
  for (let v = min; v <= max + step * 1e-6; v += step) values.push(round(v));
  return values;
}

/** The plot area of a chart `width` wide, and scales from values to it. */
function frame(width, x, y) {
  const box = { left: MARGIN.left, right: width - MARGIN.right, top: MARGIN.top, bottom: HEIGHT - MARGIN.bottom };
  const sx = (v) => box.left + ((v - x.min) / (x.max - x.min || 1)) * (box.right - box.left);
  const clamp = (v) => Math.min(y.max, Math.max(y.min, v));
  const sy = (v) => box.bottom - ((clamp(v) - y.min) / (y.max - y.min || 1)) * (box.bottom - box.top);
  return { box, sx, sy };
}

/** Grid lines, tick labels and axis titles. */
function axes(plot, x, y) {
  const { box, sx, sy } = plot;
  const group = svg('g', { className: 'axes', 'aria-hidden': 'true' });
  for (const v of ticks(y.min, y.max, y.step)) {
    group.append(svg('line', { className: 'grid', x1: box.left, x2: box.right, y1: round(sy(v)), y2: round(sy(v)) }));
    group.append(svg('text', { x: box.left - 6, y: round(sy(v)), 'text-anchor': 'end', 'dominant-baseline': 'middle', text: v }));
  }
  for (const v of ticks(x.min, x.max, x.step)) {
    group.append(svg('line', { className: 'tick', x1: round(sx(v)), x2: round(sx(v)), y1: box.bottom, y2: box.bottom + 4 }));
    group.append(svg('text', { x: round(sx(v)), y: box.bottom + 16, 'text-anchor': 'middle', text: x.label ? x.label(v) : v }));
  }
  group.append(svg('line', { className: 'axis', x1: box.left, x2: box.right, y1: box.bottom, y2: box.bottom }));
  group.append(svg('line', { className: 'axis', x1: box.left, x2: box.left, y1: box.top, y2: box.bottom }));
  group.append(svg('text', { className: 'axis-title', x: (box.left + box.right) / 2, y: HEIGHT - 6, 'text-anchor': 'middle', text: x.title }));
  const middle = (box.top + box.bottom) / 2;
  group.append(svg('text', {
    className: 'axis-title', x: 14, y: middle, 'text-anchor': 'middle', transform: `rotate(-90 14 ${middle})`, text: y.title,
  }));
  return group;
}

/** The chart's root: an image named by its title and described by its description. */
function chartRoot(width, id, title, description) {
  return svg('svg', {
    id, className: 'chart', viewBox: `0 0 ${width} ${HEIGHT}`, role: 'img', 'aria-labelledby': `${id}-title ${id}-desc`,
  },
  svg('title', { id: `${id}-title`, text: title }),
  svg('desc', { id: `${id}-desc`, text: description }));
}

/**
 * VMAF per second: one polyline per series (`{label, output, rendition, values}`, a value per
 * whole second, drawn at the middle of its second), seams (`{at, vmafMin}`) as vertical lines.
 */
export function vmafChart(id, width, series, seams) {
  const seconds = Math.max(1, ...series.map((s) => s.values.length));
  const t = timeTicks(seconds);
  const x = { min: 0, max: Math.ceil(seconds / t.step) * t.step, step: t.step, label: t.label, title: t.title };
  const y = { ...vmafRange(series.flatMap((s) => s.values)), title: 'VMAF' };
  const plot = frame(width, x, y);
  const names = series.map((s) => s.label).join(', ');
  const marks = seams.length ? ` ${seams.length} seam${seams.length === 1 ? '' : 's'} between segments marked.` : '';
  const root = chartRoot(width, id, 'VMAF per second',
    `Line chart of the mean VMAF of each second for ${names}; time from 0 to ${x.max} s, VMAF from ${y.min} to ${y.max}.${marks}`);
  root.append(axes(plot, x, y));
  for (const seam of seams) root.append(seamLine(plot, seam));
  series.forEach((s, index) => {
    const points = [];
    s.values.forEach((v, second) => { if (finite(v)) points.push(`${round(plot.sx(second + 0.5))},${round(plot.sy(v))}`); });
    root.append(svg('polyline', {
      className: `series series-${index % SERIES_STYLES}`, fill: 'none', points: points.join(' '),
      'data-output': s.output, 'data-rendition': s.rendition,
    }));
  });
  return root;
}

function seamLine(plot, seam) {
  const xAt = round(plot.sx(seam.at));
  const worst = finite(seam.vmafMin) ? `, lowest VMAF ${seam.vmafMin.toFixed(1)}` : '';
  return svg('line', { className: 'seam', x1: xAt, x2: xAt, y1: plot.box.top, y2: plot.box.bottom, 'data-at': seam.at },
    svg('title', { text: `Seam between segments at ${seam.at.toFixed(1)} s${worst}` }));
}

/**
 * Rate against quality: per ladder (`{label, output, points: [{rendition, kbps, vmaf}]}`, in
 * ladder order; a CMAF ladder gives one per codec), a point per rung at its average rate and
 * mean VMAF, joined in that order; each ladder has its own marker shape and dash pattern.
 */
export function rateChart(id, width, ladders) {
  const all = ladders.flatMap((l) => l.points);
  const top = Math.max(...all.map((p) => p.kbps)) * 1.1;
  const step = niceStep(top, 6);
  const x = { min: 0, max: Math.ceil(top / step) * step, step, title: 'Average rate (kb/s)' };
  const y = { ...vmafRange(all.map((p) => p.vmaf)), title: 'VMAF (mean)' };
  const plot = frame(width, x, y);
  const root = chartRoot(width, id, 'Rate against quality',
    `Scatter chart of each rung's average rate (0 to ${x.max} kb/s) against its mean VMAF (${y.min} to ${y.max}), `
    + `${all.length} rung${all.length === 1 ? '' : 's'} in ${ladders.length} ladder${ladders.length === 1 ? '' : 's'}, joined in ladder order.`);
  root.append(axes(plot, x, y));
  ladders.forEach((ladder, index) => {
    const style = `series-${index % SERIES_STYLES}`;
    const coords = ladder.points.map((p) => [round(plot.sx(p.kbps)), round(plot.sy(p.vmaf))]);
    root.append(svg('polyline', {
      className: `series ${style}`, fill: 'none', points: coords.map((c) => c.join(',')).join(' '), 'data-output': ladder.label,
    }));
    ladder.points.forEach((p, i) => {
      const [cx, cy] = coords[i];
      const text = `${ladder.label} ${p.rendition}: ${Math.round(p.kbps)} kb/s, VMAF ${p.vmaf.toFixed(1)}`;
      const point = marker(index, cx, cy, `point ${style}`);
      point.setAttribute('data-rendition', p.rendition);
      point.setAttribute('data-output', ladder.output || ladder.label);
      point.append(svg('title', { text }));
      root.append(point);
      root.append(svg('text', { className: 'point-label', x: cx + 7, y: cy - 7, 'aria-hidden': 'true', text: p.rendition }));
    });
  });
  return root;
}

/** The marker shapes of the series, in order: a series is told apart by its shape too. */
const MARKERS = ['circle', 'square', 'triangle', 'diamond', 'triangle-down', 'cross'];

/** Series `index`'s marker at (cx, cy), about 9 px across. */
function marker(index, cx, cy, className) {
  const shape = MARKERS[index % MARKERS.length];
  const at = (points) => points.map(([x, y]) => `${round(cx + x)},${round(cy + y)}`).join(' ');
  const cls = `${className} marker-${shape}`;
  switch (shape) {
    case 'square': return svg('rect', { className: cls, x: round(cx - 4), y: round(cy - 4), width: 8, height: 8 });
    case 'triangle': return svg('polygon', { className: cls, points: at([[0, -5.5], [5, 4], [-5, 4]]) });
    case 'diamond': return svg('polygon', { className: cls, points: at([[0, -5.5], [5.5, 0], [0, 5.5], [-5.5, 0]]) });
    case 'triangle-down': return svg('polygon', { className: cls, points: at([[0, 5.5], [5, -4], [-5, -4]]) });
    case 'cross': return svg('polygon', {
      className: cls,
      points: at([[-2, -5], [2, -5], [2, -2], [5, -2], [5, 2], [2, 2], [2, 5], [-2, 5], [-2, 2], [-5, 2], [-5, -2], [-2, -2]]),
    });
    default: return svg('circle', { className: cls, cx, cy, r: 4.5 });
  }
}

/** A small sample of series `index`'s line (and its marker, for the scatter), for a legend. */
export function swatch(index, withMarker = false) {
  const style = `series-${index % SERIES_STYLES}`;
  return svg('svg', { className: 'swatch', viewBox: '0 0 28 12', width: 28, height: 12, 'aria-hidden': 'true' },
    svg('line', { className: `series ${style}`, x1: 1, x2: 27, y1: 6, y2: 6 }),
    withMarker ? marker(index, 14, 6, `point ${style}`) : null);
}
