// Lathe dashboard: line charts drawn as SVG, with no library. app.js asks
// for them with its DOM helpers: LatheCharts.create({h, append,
// formatNumber}).lineChart({xLabel, yLabel, series}). Every point is a
// <circle> with a <title>, so a test can count them and a reader hover them.
'use strict';

window.LatheCharts = {
  create({ h, append, formatNumber }) {
    const SVG_NS = 'http://www.w3.org/2000/svg';
    const COLORS = ['#2563eb', '#dc2626', '#059669', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];

    function svg(tag, attrs, ...children) {
      const el = document.createElementNS(SVG_NS, tag);
      for (const [k, v] of Object.entries(attrs || {})) {
        if (v !== undefined && v !== null) el.setAttribute(k, String(v));
      }
      append(el, children);
      return el;
    }

    // About `count` round tick values (1, 2 or 5 times a power of ten) over [lo, hi].
    function niceTicks(lo, hi, count) {
      if (!(hi > lo)) return [lo];
      const raw = (hi - lo) / count;
      const mag = Math.pow(10, Math.floor(Math.log10(raw)));
      const norm = raw / mag;
      const step = (norm < 1.5 ? 1 : norm < 3.5 ? 2 : norm < 7.5 ? 5 : 10) * mag;
      const ticks = [];
      for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
        ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
      }
      return ticks;
    }

    // Labels for one axis's ticks, all with the same number of decimals.
    function tickLabels(ticks) {
      const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : Math.abs(ticks[0]) || 1;
      const biggest = Math.max(...ticks.map(Math.abs));
      const decimals = Math.max(0, -Math.floor(Math.log10(step)));
      if (decimals > 4 || biggest >= 1e6) return ticks.map((t) => (t === 0 ? '0' : t.toExponential(1)));
      return ticks.map((t) => (t === 0 ? '0' : t.toFixed(decimals)));
    }

    // A line chart: an SVG element (and a legend list when there are several
    // series). series: [{name, points: [[x, y]], pointTestid}]. Each point is
    // also a circle, so the number of points can be counted.
    function lineChart({ xLabel, yLabel, series }) {
      const W = 420, H = 240, L = 58, R = 12, T = 12, B = 40;
      const all = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
      const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'line-chart',
        'aria-label': yLabel + ' by ' + xLabel + (all.length ? '' : ': no data yet') });
      if (!all.length) {
        root.append(svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'no data yet'));
        return root;
      }
      let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
      let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
      if (x0 === x1) { x0 -= 1; x1 += 1; }
      if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
      const pad = (y1 - y0) * 0.05;
      y0 -= pad; y1 += pad;
      const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
      const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);

      const axes = svg('g', { class: 'axes' });
      const xTicks = niceTicks(x0, x1, 5);
      tickLabels(xTicks).forEach((label, i) => {
        const x = sx(xTicks[i]);
        axes.append(svg('line', { x1: x, x2: x, y1: T, y2: H - B, class: 'grid' }),
          svg('text', { x, y: H - B + 14, 'text-anchor': 'middle' }, label));
      });
      const yTicks = niceTicks(y0, y1, 4);
      tickLabels(yTicks).forEach((label, i) => {
        const y = sy(yTicks[i]);
        axes.append(svg('line', { x1: L, x2: W - R, y1: y, y2: y, class: 'grid' }),
          svg('text', { x: L - 4, y: y + 4, 'text-anchor': 'end' }, label));
      });
      axes.append(
        svg('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, class: 'axis' }),
        svg('line', { x1: L, x2: L, y1: T, y2: H - B, class: 'axis' }),
        svg('text', { x: (L + W - R) / 2, y: H - 6, 'text-anchor': 'middle', class: 'axis-label' }, xLabel),
        svg('text', { x: 12, y: (T + H - B) / 2, 'text-anchor': 'middle', class: 'axis-label',
          transform: `rotate(-90 12 ${(T + H - B) / 2})` }, yLabel));
      root.append(axes);

      series.forEach((s, i) => {
        const color = COLORS[i % COLORS.length];
        const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y))
          .slice().sort((a, b) => a[0] - b[0]);
        const g = svg('g', { class: 'series', 'data-series': s.name });
        g.append(svg('polyline', { fill: 'none', stroke: color, 'stroke-width': 1.5,
          points: pts.map(([x, y]) => sx(x).toFixed(1) + ',' + sy(y).toFixed(1)).join(' ') }));
        for (const [x, y] of pts) {
          g.append(svg('circle', { cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 2.5, fill: color,
            'data-testid': s.pointTestid },
          svg('title', {}, s.name + ' at ' + xLabel + ' ' + formatNumber(x) + ': ' + formatNumber(y))));
        }
        root.append(g);
      });
      if (series.length < 2) return root;
      const legend = h('ul', { class: 'legend' }, series.map((s, i) => h('li', {},
        svg('svg', { width: 10, height: 10, 'aria-hidden': 'true' },
          svg('rect', { width: 10, height: 10, fill: COLORS[i % COLORS.length] })), ' ', s.name)));
      const box = document.createDocumentFragment();
      box.append(root, legend);
      return box;
    }

    return { lineChart };
  },
};
