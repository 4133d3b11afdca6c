// Lathe dashboard: a single page over the server's JSON API (/v1/...).
//
// Routes: #/jobs, #/jobs/<id>, #/queue. Every request carries the bearer
// token that the user typed in; it lives in sessionStorage only, so it goes
// away with the tab. The API speaks protobuf's JSON mapping: int64 fields
// arrive as strings and fields at their default value are left out, so the
// code reads every field through num() / str() / obj().
'use strict';

(function () {
  const TOKEN_KEY = 'lathe.token';
  const REFRESH_MS = 3000;
  const MAX_EVENTS = 200;
  const FINAL_STATES = ['SUCCEEDED', 'FAILED', 'CANCELLED'];
  const ALL_STATES = ['QUEUED', 'RUNNING', 'PAUSING', 'PAUSED', 'CANCELLING',
    'SUCCEEDED', 'FAILED', 'CANCELLED'];
  const ACTIVE_STATES = ['QUEUED', 'RUNNING', 'PAUSING', 'PAUSED', 'CANCELLING'];

  // ---- small helpers -------------------------------------------------------

  const num = (v) => (v === undefined || v === null || v === '' ? 0 : Number(v));
  const str = (v) => (v === undefined || v === null ? '' : String(v));
  const obj = (v) => (v && typeof v === 'object' ? v : {});
  const isFinal = (state) => FINAL_STATES.includes(state);

  // Builds an element: h('td', {class: 'x', dataset: {testid: 'y'}}, 'text', child).
  // Text always goes through text nodes, never innerHTML.
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function append(el, children) {
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  const { formatDuration, formatTime, formatNumber, formatBytes } = window.LatheFormat;

  function progressText(job) {
    const tm = obj(job.train_metrics);
    const total = num(tm.total_steps);
    if (!total) return '';
    const pct = Math.min(100, (100 * num(tm.step)) / total);
    return pct.toFixed(0) + '% (' + num(tm.step) + '/' + total + ')';
  }

  function roleName(role) {
    return str(role).replace(/^ROLE_/, '').toLowerCase();
  }

  // Line charts in SVG (charts.js), drawn with the helpers above.
  const { lineChart } = window.LatheCharts.create({ h, append, formatNumber });

  // ---- session and requests ------------------------------------------------

  const session = {
    token: () => sessionStorage.getItem(TOKEN_KEY) || '',
    set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
    clear: () => sessionStorage.removeItem(TOKEN_KEY),
    me: null, // the whoami answer
  };

  class ApiError extends Error {
    constructor(status, body) {
      const e = obj(obj(body).error);
      super(e.message || 'HTTP ' + status);
      this.status = status;
      this.code = e.code || '';
    }
  }

  function authHeaders() {
    return { Authorization: 'Bearer ' + session.token() };
  }

  // Sends a request and returns the parsed JSON; throws ApiError for 4xx/5xx.
  // A 401 anywhere sends the user back to the login form.
  async function api(path, options) {
    const opts = Object.assign({ method: 'GET' }, options || {});
    opts.headers = Object.assign(authHeaders(), opts.headers || {});
    const resp = await fetch(path, opts);
    const text = await resp.text();
    let body = {};
    if (text) {
      try { body = JSON.parse(text); } catch (e) { body = {}; }
    }
    if (!resp.ok) {
      const err = new ApiError(resp.status, body);
      if (resp.status === 401) showLogin(err.message);
      throw err;
    }
    return body;
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of params) if (v !== undefined && v !== '') q.append(k, v);
    const s = q.toString();
    return s ? '?' + s : '';
  }

  const jobPath = (id) => '/v1/jobs/' + encodeURIComponent(id);

  // ---- error area ----------------------------------------------------------

  const errorBox = document.getElementById('error');

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  // Reports an error unless it was the 401 that already showed the login.
  function report(err) {
    if (err && err.name === 'AbortError') return;
    if (err instanceof ApiError && err.status === 401) return;
    showError(err instanceof ApiError ? err.message : 'Request failed: ' + err);
  }

  // ---- login ---------------------------------------------------------------

  const loginBox = document.getElementById('login');
  const loginForm = document.getElementById('login-form');
  const tokenInput = document.getElementById('token-input');
  const main = document.getElementById('main');
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');

  function showLogin(message) {
    stopView();
    session.clear();
    session.me = null;
    Object.assign(jobsFilter, { state: '', owner: '', tokens: [''] });
    main.hidden = true;
    nav.hidden = true;
    who.hidden = true;
    main.replaceChildren();
    document.getElementById('whoami').textContent = '';
    loginBox.hidden = false;
    showError(message || '');
    tokenInput.focus();
  }

  async function startSession() {
    try {
      session.me = await api('/v1/whoami');
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) {
        showLogin(err instanceof ApiError ? err.message : 'Cannot reach the server: ' + err);
      }
      return;
    }
    const user = obj(session.me.user);
    document.getElementById('whoami').textContent =
      str(user.name) + ' · team ' + str(user.team) + ' · ' + roleName(user.role);
    loginBox.hidden = true;
    main.hidden = false;
    nav.hidden = false;
    who.hidden = false;
    showError('');
    route();
  }

  loginForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = tokenInput.value.trim();
    tokenInput.value = ''; // keep the secret out of the DOM
    if (!token) return;
    session.set(token);
    startSession();
  });

  document.getElementById('logout').addEventListener('click', (ev) => {
    ev.preventDefault();
    showLogin('');
  });

  function canControlJobs() {
    const role = obj(obj(session.me).user).role;
    return role === 'ROLE_ADMIN' || role === 'ROLE_MEMBER';
  }

  // ---- routing -------------------------------------------------------------

  // The current view's cleanup (timers, streams); called before the next one.
  let stopCurrent = null;

  function stopView() {
    if (stopCurrent) stopCurrent();
    stopCurrent = null;
  }

  function route() {
    if (!session.me) return;
    stopView();
    showError('');
    main.replaceChildren();
    const hash = location.hash.replace(/^#/, '') || '/jobs';
    const parts = hash.split('/').filter(Boolean);
    for (const a of nav.querySelectorAll('a')) {
      a.toggleAttribute('aria-current', a.dataset.route === parts[0]);
    }
    if (parts[0] === 'jobs' && parts.length === 2) {
      stopCurrent = jobView(decodeURIComponent(parts[1]));
    } else if (parts[0] === 'queue') {
      stopCurrent = queueView();
    } else {
      stopCurrent = jobsView();
    }
  }

  window.addEventListener('hashchange', route);

  // Calls fn now and every REFRESH_MS while the page is visible; returns a
  // stop. A refresh that works again clears the error the last one showed.
  function every(fn) {
    let stopped = false;
    let timer = null;
    let failed = false;
    const tick = async () => {
      if (stopped) return;
      if (document.visibilityState === 'visible') {
        try {
          await fn();
          if (failed && !stopped) showError('');
          failed = false;
        } catch (err) {
          failed = true;
          report(err);
        }
      }
      if (!stopped) timer = setTimeout(tick, REFRESH_MS);
    };
    tick();
    return () => { stopped = true; clearTimeout(timer); };
  }

  // ---- tables --------------------------------------------------------------

  function table(testid, caption, headers, rows) {
    return h('table', { dataset: testid ? { testid } : undefined },
      caption ? h('caption', {}, caption) : null,
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows));
  }

  function keyValueTable(testid, caption, map, emptyText) {
    const entries = Object.entries(obj(map)).sort(([a], [b]) => a.localeCompare(b));
    if (!entries.length) return h('p', { class: 'muted', dataset: testid ? { testid } : undefined }, emptyText);
    return table(testid, caption, ['name', 'value'],
      entries.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k),
        h('td', {}, typeof v === 'number' ? formatNumber(v) : str(v)))));
  }

  function stateBadge(state, testid) {
    const s = str(state) || 'UNKNOWN';
    return h('span', { class: 'state state-' + s.toLowerCase(), dataset: testid ? { testid } : undefined }, s);
  }

  // ---- jobs list -----------------------------------------------------------

  // Filters and paging survive moving between pages within this tab.
  const jobsFilter = { state: '', owner: '', tokens: [''] };

  function jobsView() {
    const stateSelect = h('select', { id: 'state-filter', dataset: { testid: 'state-filter' } },
      h('option', { value: '' }, 'all'),
      h('option', { value: 'active' }, 'active (not final)'),
      ALL_STATES.map((s) => h('option', { value: s }, s)));
    stateSelect.value = jobsFilter.state;
    const ownerInput = h('input', { id: 'owner-filter', type: 'search', value: jobsFilter.owner,
      placeholder: 'any', dataset: { testid: 'owner-filter' } });
    const prev = h('button', { type: 'button', dataset: { testid: 'prev-page' } }, '← Previous');
    const next = h('button', { type: 'button', dataset: { testid: 'next-page' } }, 'Next →');
    const body = h('tbody');
    const pageInfo = h('span', { class: 'muted' });
    let nextToken = '';

    const resetPaging = () => { jobsFilter.tokens = ['']; };
    stateSelect.addEventListener('change', () => { jobsFilter.state = stateSelect.value; resetPaging(); load(); });
    ownerInput.addEventListener('change', () => { jobsFilter.owner = ownerInput.value.trim(); resetPaging(); load(); });
    next.addEventListener('click', () => { if (nextToken) { jobsFilter.tokens.push(nextToken); load(); } });
    prev.addEventListener('click', () => { if (jobsFilter.tokens.length > 1) { jobsFilter.tokens.pop(); load(); } });

    main.append(
      h('h1', {}, 'Jobs'),
      h('form', { class: 'filters', onsubmit: (e) => e.preventDefault() },
        h('label', { for: 'state-filter' }, 'State'), stateSelect,
        h('label', { for: 'owner-filter' }, 'Owner'), ownerInput),
      h('table', { dataset: { testid: 'jobs-table' } },
        h('thead', {}, h('tr', {}, ['id', 'state', 'task', 'model', 'owner', 'team', 'progress',
          'ETA', 'queue position', 'age'].map((t) => h('th', { scope: 'col' }, t)))),
        body),
      h('div', { class: 'pager' }, prev, pageInfo, next));

    let seq = 0; // drops answers that arrive after a newer request was sent
    async function load() {
      const mine = ++seq;
      const states = jobsFilter.state === 'active' ? ACTIVE_STATES
        : jobsFilter.state ? [jobsFilter.state] : [];
      const params = [['page_size', '50']];
      const token = jobsFilter.tokens[jobsFilter.tokens.length - 1];
      if (token) params.push(['page_token', token]);
      for (const s of states) params.push(['state', s]);
      if (jobsFilter.owner) params.push(['owner', jobsFilter.owner]);
      const resp = await api('/v1/jobs' + query(params));
      if (mine !== seq) return;
      nextToken = str(resp.next_page_token);
      const jobs = Array.isArray(resp.jobs) ? resp.jobs : [];
      body.replaceChildren(...(jobs.length ? jobs.map(jobRow)
        : [h('tr', {}, h('td', { colspan: 10, class: 'muted' }, 'No jobs.'))]));
      prev.disabled = jobsFilter.tokens.length <= 1;
      next.disabled = !nextToken;
      pageInfo.textContent = 'page ' + jobsFilter.tokens.length;
    }

    return every(load);
  }

  function jobRow(job) {
    const spec = obj(job.spec);
    const tm = obj(job.train_metrics);
    const id = str(job.id);
    const eta = num(tm.eta_seconds);
    const created = num(job.create_time_ms);
    return h('tr', { dataset: { testid: 'job-row', jobId: id } },
      h('td', {}, h('a', { href: '#/jobs/' + encodeURIComponent(id) }, id)),
      h('td', {}, stateBadge(job.state)),
      h('td', {}, str(spec.task)),
      h('td', {}, str(spec.model)),
      h('td', {}, str(spec.owner)),
      h('td', {}, str(job.team)),
      h('td', {}, progressText(job)),
      h('td', {}, job.state === 'RUNNING' && eta ? formatDuration(eta) : ''),
      h('td', {}, job.state === 'QUEUED' ? String(num(job.queue_position)) : ''),
      h('td', { title: formatTime(created) }, created ? formatDuration((Date.now() - created) / 1000) : ''));
  }

  // ---- one job -------------------------------------------------------------

  function jobView(id) {
    const abort = new AbortController();
    let job = null;
    let lastSeq = 0;
    let checkpointsDirty = true;
    const loss = [];       // [step, loss]
    const lr = [];         // [step, learning rate]
    const evals = {};      // metric name -> [[step, value]]
    const events = [];     // newest last, at most MAX_EVENTS

    const title = h('h1', {}, 'Job ', h('code', {}, id), ' ');
    const stateSlot = h('span');
    title.append(stateSlot);
    const actions = h('div', { class: 'actions' });
    const summary = h('dl', { class: 'summary' });
    const errorSlot = h('div');
    const charts = {
      loss: h('figure', { class: 'chart', dataset: { testid: 'loss-chart' } }),
      lr: h('figure', { class: 'chart', dataset: { testid: 'lr-chart' } }),
      eval: h('figure', { class: 'chart', dataset: { testid: 'eval-chart' } }),
    };
    const evalSlot = h('div');
    const paramsSlot = h('div');
    const modelSlot = h('pre', { class: 'json' });
    const checkpointsSlot = h('div');
    const eventsList = h('ol', { class: 'events', dataset: { testid: 'events' }, reversed: true });
    const streamStatus = h('span', { class: 'muted', dataset: { testid: 'stream-status' } });

    main.append(
      h('p', {}, h('a', { href: '#/jobs' }, '← All jobs')),
      title, actions, errorSlot, summary,
      h('section', {}, h('h2', {}, 'Training'), h('div', { class: 'charts' }, charts.loss, charts.lr, charts.eval)),
      h('section', {}, h('h2', {}, 'Evaluation metrics'), evalSlot),
      h('section', {}, h('h2', {}, 'Hyperparameters'), paramsSlot),
      h('section', {}, h('h2', {}, 'Resolved model'), modelSlot),
      h('section', {}, h('h2', {}, 'Checkpoints'), checkpointsSlot),
      h('section', {}, h('h2', {}, 'Events ', streamStatus), eventsList));

    // Renders everything that depends on the job object.
    function renderJob() {
      const spec = obj(job.spec);
      const tm = obj(job.train_metrics);
      stateSlot.replaceChildren(stateBadge(job.state, 'job-state'));
      renderActions();
      errorSlot.replaceChildren(job.error
        ? h('p', { class: 'job-error', dataset: { testid: 'job-error' } }, 'Error: ' + job.error) : '');
      const rows = [
        ['task', spec.task], ['model', spec.model], ['owner', spec.owner], ['team', job.team],
        ['training data', spec.train_data], ['validation data', spec.validation_data],
        ['device', spec.device], ['attempt', num(job.attempt) || ''], ['worker', job.worker_id],
        ['queue position', job.state === 'QUEUED' ? String(num(job.queue_position)) : ''],
        ['progress', progressText(job)],
        ['loss', tm.loss !== undefined ? formatNumber(tm.loss) : ''],
        ['samples/s', tm.samples_per_second ? formatNumber(tm.samples_per_second) : ''],
        ['tokens/s', tm.tokens_per_second ? formatNumber(tm.tokens_per_second) : ''],
        ['ETA', job.state === 'RUNNING' && num(tm.eta_seconds) ? formatDuration(num(tm.eta_seconds)) : ''],
        ['created', formatTime(num(job.create_time_ms))],
        ['started', formatTime(num(job.start_time_ms))],
        ['ended', formatTime(num(job.end_time_ms))],
        ['labels', Object.entries(obj(spec.labels)).map(([k, v]) => k + '=' + v).join(', ')],
      ];
      summary.replaceChildren(...rows.filter(([, v]) => str(v) !== '')
        .flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, str(v))]));
      evalSlot.replaceChildren(keyValueTable('eval-metrics', 'Latest evaluation', job.eval_metrics,
        'No evaluation yet.'));
      paramsSlot.replaceChildren(keyValueTable('params', null, spec.params, 'Defaults only.'));
      modelSlot.textContent = JSON.stringify(obj(job.model_source), null, 2);
    }

    // Only admins and members see controls, and only those that fit the state.
    // Rebuilt only when the state changes, so a click is never lost to a
    // redraw between mouse down and up.
    let actionsState = null;
    function renderActions() {
      const s = job.state;
      if (s === actionsState) return;
      actionsState = s;
      actions.replaceChildren();
      if (!canControlJobs()) return;
      const btn = (verb, label, cls) => h('button', {
        type: 'button', class: cls, dataset: { testid: verb },
        onclick: (ev) => act(verb, ev.currentTarget),
      }, label);
      if (!isFinal(s)) actions.append(btn('cancel', 'Cancel', 'danger'));
      if (s === 'QUEUED' || s === 'RUNNING') actions.append(btn('pause', 'Pause'));
      if (s === 'PAUSED') actions.append(btn('resume', 'Resume'));
      if (s === 'RUNNING') actions.append(btn('checkpoint', 'Checkpoint now'));
    }

    async function act(verb, button) {
      if (verb === 'cancel' && !window.confirm('Cancel job ' + id + '?')) return;
      button.disabled = true;
      try {
        const resp = await api(jobPath(id) + ':' + verb, {
          method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}',
        });
        if (resp.job) { job = resp.job; renderJob(); }
        showError('');
      } catch (err) {
        report(err);
      } finally {
        button.disabled = false;
      }
    }

    let chartTimer = null;
    function scheduleCharts() {
      if (chartTimer) return;
      chartTimer = setTimeout(() => {
        chartTimer = null;
        charts.loss.replaceChildren(h('figcaption', {}, 'Training loss'),
          lineChart({ xLabel: 'step', yLabel: 'loss', series: [{ name: 'loss', points: loss, pointTestid: 'loss-point' }] }));
        charts.lr.replaceChildren(h('figcaption', {}, 'Learning rate'),
          lineChart({ xLabel: 'step', yLabel: 'learning rate', series: [{ name: 'learning rate', points: lr, pointTestid: 'lr-point' }] }));
        charts.eval.replaceChildren(h('figcaption', {}, 'Evaluation metrics'),
          lineChart({ xLabel: 'step', yLabel: 'value', series: Object.keys(evals).sort()
            .filter((name) => !name.startsWith('confusion_matrix/')) // counts, not scores
            .map((name) => ({ name, points: evals[name], pointTestid: 'eval-point' })) }));
        eventsList.replaceChildren(...events.slice().reverse().map(eventItem));
      }, 100);
    }

    function onEvent(ev) {
      const seq = num(ev.seq);
      if (seq && seq <= lastSeq) return; // already seen (a replay after reconnecting)
      if (seq) lastSeq = seq;
      const step = num(ev.step);
      if (ev.type === 'EVENT_TYPE_TRAIN_METRICS') {
        const t = obj(ev.train);
        const s = num(t.step) || step;
        if (t.loss !== undefined) loss.push([s, num(t.loss)]);
        lr.push([s, num(t.learning_rate)]);
      } else if (ev.type === 'EVENT_TYPE_EVAL_METRICS') {
        for (const [name, v] of Object.entries(obj(ev.eval))) {
          (evals[name] = evals[name] || []).push([step, num(v)]);
        }
      } else if (ev.type === 'EVENT_TYPE_CHECKPOINT') {
        checkpointsDirty = true;
      }
      events.push(ev);
      if (events.length > MAX_EVENTS) events.splice(0, events.length - MAX_EVENTS);
      scheduleCharts();
    }

    function onMessage(msg) {
      if (msg.job) {
        const before = job && job.state;
        job = msg.job;
        renderJob();
        if (before !== job.state && isFinal(job.state)) checkpointsDirty = true;
      }
      if (msg.event) onEvent(msg.event);
      if (checkpointsDirty) loadCheckpoints();
    }

    let loadingCheckpoints = false;
    async function loadCheckpoints() {
      if (loadingCheckpoints) return;
      loadingCheckpoints = true;
      checkpointsDirty = false;
      try {
        const resp = await api(jobPath(id) + '/checkpoints', { signal: abort.signal });
        checkpointsSlot.replaceChildren(checkpointsTable(id, resp));
      } catch (err) {
        report(err);
      } finally {
        loadingCheckpoints = false;
      }
      if (checkpointsDirty && !abort.signal.aborted) loadCheckpoints();
    }

    // Reads the event stream; reconnects from the last seen sequence number
    // until the server ends the stream of a final job.
    async function follow() {
      let delay = 1000;
      while (!abort.signal.aborted) {
        streamStatus.textContent = '(live)';
        try {
          const resp = await fetch(jobPath(id) + '/events' + query([['after_seq', String(lastSeq)]]), {
            headers: Object.assign(authHeaders(), { Accept: 'text/event-stream' }),
            signal: abort.signal,
          });
          if (!resp.ok) {
            let body = {};
            try { body = await resp.json(); } catch (e) { body = {}; }
            const err = new ApiError(resp.status, body);
            if (resp.status === 401) showLogin(err.message);
            if (resp.status >= 400 && resp.status < 500) { report(err); streamStatus.textContent = ''; return; }
            throw err;
          }
          await readEventStream(resp.body, (data) => { onMessage(data); delay = 1000; });
          if (job && isFinal(job.state)) { streamStatus.textContent = ''; return; }
        } catch (err) {
          if (abort.signal.aborted) return;
        }
        streamStatus.textContent = '(reconnecting)';
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10000);
      }
    }

    // The job itself first (so a wrong id says so at once), then its events.
    (async () => {
      try {
        const resp = await api(jobPath(id), { signal: abort.signal });
        if (!job && resp.job) { job = resp.job; renderJob(); loadCheckpoints(); }
      } catch (err) {
        report(err);
        return;
      }
      follow();
    })();
    return () => { abort.abort(); clearTimeout(chartTimer); };
  }

  // Parses a text/event-stream body, calling onData with each message's JSON.
  async function readEventStream(body, onData) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue; // comment (keep-alive)
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? '' : line.slice(colon + 1);
          if (value.startsWith(' ')) value = value.slice(1);
          if (field === 'data') data.push(value);
        }
        if (!data.length) continue;
        let parsed;
        try { parsed = JSON.parse(data.join('\n')); } catch (e) { continue; }
        onData(parsed);
      }
    }
  }

  function eventItem(ev) {
    const type = str(ev.type).replace(/^EVENT_TYPE_/, '').toLowerCase();
    const step = num(ev.step);
    let text = str(ev.message);
    if (ev.type === 'EVENT_TYPE_STATE') {
      text = 'state ' + str(ev.state) + (ev.message ? ': ' + ev.message : '');
    } else if (ev.type === 'EVENT_TYPE_TRAIN_METRICS') {
      const t = obj(ev.train);
      text = 'step ' + num(t.step) + '/' + num(t.total_steps) + '  loss ' + formatNumber(num(t.loss)) +
        '  lr ' + formatNumber(num(t.learning_rate)) + '  ' + formatNumber(num(t.samples_per_second)) + ' samples/s';
    } else if (ev.type === 'EVENT_TYPE_EVAL_METRICS') {
      text = 'eval at step ' + step + ': ' + Object.entries(obj(ev.eval))
        .map(([k, v]) => k + '=' + formatNumber(v)).join(', ');
    } else if (ev.type === 'EVENT_TYPE_CHECKPOINT') {
      const c = obj(ev.checkpoint);
      text = 'checkpoint at step ' + (num(c.step) || step) + (c.final ? ' (final)' : '') +
        (ev.message ? ': ' + ev.message : '');
    }
    const t = num(ev.time_ms);
    return h('li', { value: num(ev.seq) || undefined },
      h('time', { datetime: t ? new Date(t).toISOString() : undefined }, t ? new Date(t).toLocaleTimeString() : ''),
      ' ', h('span', { class: 'event-type' }, type), ' ', text);
  }

  // ---- checkpoints ---------------------------------------------------------

  function checkpointsTable(id, resp) {
    const list = Array.isArray(resp.checkpoints) ? resp.checkpoints : [];
    if (!list.length) return h('p', { class: 'muted', dataset: { testid: 'checkpoints' } }, 'No checkpoints yet.');
    const best = num(resp.best_step);
    const rows = [];
    for (const c of list) {
      const step = num(c.step);
      const files = Array.isArray(c.files) ? c.files : [];
      const metrics = Object.entries(obj(c.metrics)).map(([k, v]) => k + '=' + formatNumber(v)).join(', ');
      const span = Math.max(1, files.length);
      const head = [
        h('td', { rowspan: span }, String(step)),
        h('td', { rowspan: span }, c.final ? 'yes' : ''),
        h('td', { rowspan: span }, best && step === best ? h('span', { class: 'best', dataset: { testid: 'best' } }, '★ best') : ''),
        h('td', { rowspan: span }, metrics),
      ];
      if (!files.length) rows.push(h('tr', { dataset: { testid: 'checkpoint-row' } }, head, h('td', { colspan: 4 }, '')));
      files.forEach((f, i) => {
        const url = jobPath(id) + '/checkpoints/' + step + '/files/' +
          str(f.name).split('/').map(encodeURIComponent).join('/');
        const absolute = new URL(url, location.href).href;
        const curl = 'curl -H "Authorization: Bearer $LATHE_TOKEN" -O ' + absolute;
        rows.push(h('tr', { dataset: i === 0 ? { testid: 'checkpoint-row' } : undefined },
          i === 0 ? head : null,
          h('td', {}, h('code', {}, str(f.name))),
          h('td', { title: num(f.size) + ' bytes' }, formatBytes(f.size)),
          h('td', {}, h('code', { class: 'sha' }, str(f.sha256))),
          h('td', {},
            h('button', { type: 'button', dataset: { testid: 'download' },
              onclick: (ev) => download(url, str(f.name).split('/').pop(), ev.currentTarget) }, 'Download'),
            h('details', {}, h('summary', {}, 'curl'), h('code', { class: 'curl' }, curl)))));
      });
    }
    return table('checkpoints', null, ['step', 'final', 'best', 'metrics', 'file', 'size', 'sha256', ''], rows);
  }

  // Fetches with the token (a plain link could not send it) and saves the blob.
  async function download(url, filename, button) {
    button.disabled = true;
    try {
      const resp = await fetch(url, { headers: authHeaders() });
      if (!resp.ok) {
        let body = {};
        try { body = await resp.json(); } catch (e) { body = {}; }
        const err = new ApiError(resp.status, body);
        if (resp.status === 401) showLogin(err.message);
        throw err;
      }
      const blobUrl = URL.createObjectURL(await resp.blob());
      const a = h('a', { href: blobUrl, download: filename, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(blobUrl), 60000);
    } catch (err) {
      report(err);
    } finally {
      button.disabled = false;
    }
  }

  // ---- queue ---------------------------------------------------------------

  function queueView() {
    const queuedBody = h('tbody');
    const runningBody = h('tbody');
    const workersSlot = h('div', { dataset: { testid: 'workers' } }, h('p', { class: 'muted' }, 'Loading…'));
    const link = (id) => h('a', { href: '#/jobs/' + encodeURIComponent(id) }, id);
    const heads = (names) => h('thead', {}, h('tr', {}, names.map((t) => h('th', { scope: 'col' }, t))));
    const empty = (cols, text) => [h('tr', {}, h('td', { colspan: cols, class: 'muted' }, text))];

    main.append(
      h('h1', {}, 'Queue'),
      h('section', {}, h('h2', {}, 'Queued'),
        h('table', { dataset: { testid: 'queued-table' } },
          heads(['position', 'id', 'task', 'model', 'owner', 'team', 'waiting', 'estimated start']), queuedBody)),
      h('section', {}, h('h2', {}, 'Running'),
        h('table', { dataset: { testid: 'running-table' } },
          heads(['id', 'state', 'worker', 'task', 'owner', 'team', 'progress', 'ETA']), runningBody)),
      // Workers (GET /v1/workers); a server without that route says so.
      h('section', {}, h('h2', {}, 'Workers'), workersSlot));

    async function load() {
      const [queued, running] = await Promise.all([
        api('/v1/jobs' + query([['state', 'QUEUED'], ['page_size', '200']])),
        api('/v1/jobs' + query([['state', 'RUNNING'], ['state', 'PAUSING'], ['state', 'CANCELLING'], ['page_size', '200']])),
      ]);
      const q = (queued.jobs || []).slice().sort((a, b) => num(a.queue_position) - num(b.queue_position));
      queuedBody.replaceChildren(...(q.length ? q.map((j) => {
        const spec = obj(j.spec);
        const est = num(j.estimated_start_time_ms);
        return h('tr', { dataset: { testid: 'queued-row', jobId: str(j.id) } },
          h('td', {}, String(num(j.queue_position))), h('td', {}, link(str(j.id))),
          h('td', {}, str(spec.task)), h('td', {}, str(spec.model)), h('td', {}, str(spec.owner)),
          h('td', {}, str(j.team)),
          h('td', {}, num(j.create_time_ms) ? formatDuration((Date.now() - num(j.create_time_ms)) / 1000) : ''),
          h('td', {}, est ? formatTime(est) : ''));
      }) : empty(8, 'Nothing queued.')));
      const r = running.jobs || [];
      runningBody.replaceChildren(...(r.length ? r.map((j) => {
        const spec = obj(j.spec);
        const eta = num(obj(j.train_metrics).eta_seconds);
        return h('tr', { dataset: { testid: 'running-row', jobId: str(j.id) } },
          h('td', {}, link(str(j.id))), h('td', {}, stateBadge(j.state)), h('td', {}, str(j.worker_id)),
          h('td', {}, str(spec.task)), h('td', {}, str(spec.owner)), h('td', {}, str(j.team)),
          h('td', {}, progressText(j)), h('td', {}, eta ? formatDuration(eta) : ''));
      }) : empty(8, 'Nothing running.')));
      await loadWorkers();
    }

    async function loadWorkers() {
      let resp;
      try {
        resp = await api('/v1/workers');
      } catch (err) {
        if (err instanceof ApiError && (err.status === 404 || err.status === 501)) {
          workersSlot.replaceChildren(h('p', { class: 'muted' }, 'Workers: not available from this server.'));
          return;
        }
        throw err;
      }
      const workers = Array.isArray(resp.workers) ? resp.workers : [];
      if (!workers.length) { workersSlot.replaceChildren(h('p', { class: 'muted' }, 'No workers.')); return; }
      const devices = (w) => (Array.isArray(w.devices) ? w.devices : []).map((d) => {
        const mb = num(obj(d).memory_mb);
        return str(obj(d).name) + (mb ? ' (' + formatNumber(mb / 1024) + ' GiB)' : '');
      }).join(', ');
      workersSlot.replaceChildren(table('workers-table', null,
        ['name', 'id', 'devices', 'jobs', 'last heartbeat', 'owner'],
        workers.map((w) => {
          const ids = Array.isArray(w.job_ids) ? w.job_ids : [];
          const hidden = num(w.running_jobs) - ids.length;
          const seen = num(w.last_heartbeat_time_ms);
          return h('tr', { dataset: { testid: 'worker-row' } },
            h('td', {}, str(w.name)), h('td', {}, str(w.id)), h('td', {}, devices(w)),
            h('td', {}, ...ids.map((id) => h('div', {}, link(id))),
              hidden > 0 ? h('div', { class: 'muted' }, hidden + " of another team's") : null,
              !ids.length && hidden <= 0 ? h('span', { class: 'muted' }, 'idle') : null),
            h('td', {}, seen ? formatDuration(Math.max(0, (Date.now() - seen) / 1000)) + ' ago' : ''),
            h('td', {}, str(w.owner)));
        })));
    }

    return every(load);
  }

  // ---- start ---------------------------------------------------------------

  if (session.token()) startSession();
  else showLogin('');
})();
