// Lathe dashboard: how numbers, sizes, times and durations are written.
'use strict';

window.LatheFormat = (() => {
  function formatDuration(seconds) {
    let s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + 's';
    const d = Math.floor(s / 86400); s -= d * 86400;
    const hr = Math.floor(s / 3600); s -= hr * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return d + 'd ' + hr + 'h';
    if (hr) return hr + 'h ' + m + 'm';
    return m + 'm ' + s + 's';
  }

  function formatTime(ms) {
    return ms ? new Date(ms).toLocaleString() : '';
  }

  function formatNumber(v) {
    const x = Number(v);
    if (!Number.isFinite(x)) return String(v);
    if (x === 0) return '0';
    const a = Math.abs(x);
    if (a >= 1e6 || a < 1e-3) return x.toExponential(2);
    return String(Number(x.toPrecision(4)));
  }

  function formatBytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = Number(n) || 0, i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : String(v)) + ' ' + units[i];
  }

  return { formatDuration, formatTime, formatNumber, formatBytes };
})();
