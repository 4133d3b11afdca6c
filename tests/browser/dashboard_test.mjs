#!/usr/bin/env node
// Browser test of the web dashboard against a real lathe-server.
//
//   node tests/browser/dashboard_test.mjs --server-bin build/bin/lathe-server \
//       --cli-bin build/bin/lathe --out build/artifacts/browser \
//       [--node-modules .cache/npm-browser/node_modules] [--chromium /usr/bin/chromium]
//
// Starts the server with one local worker on kernel-chosen ports, creates a
// viewer with the CLI, uploads a dataset and submits jobs over the HTTP API,
// then drives headless Chromium through the dashboard: login, the jobs list,
// a job's live loss chart, its final metrics and checkpoint download, cancel,
// the viewer's view without controls, and a refused token. Screenshots go to
// --out. Exits 0 and prints one PASS line, or exits 1 naming the failed step.
// The server and the browser are always stopped.

import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  LatheServer, TestFailure, check, elapsedSeconds, log, runCli, sleep, waitFor,
} from '../support/lathe_test.mjs';

const TEST_TIMEOUT_MS = 230_000; // CTest gives 300 s
const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');

// ---- arguments and prerequisites -------------------------------------------

function parseArgs(argv) {
  const args = {
    nodeModules: path.join(ROOT, '.cache', 'npm-browser', 'node_modules'),
    chromium: '/usr/bin/chromium',
  };
  const names = { '--server-bin': 'serverBin', '--cli-bin': 'cliBin', '--out': 'out',
    '--node-modules': 'nodeModules', '--chromium': 'chromium' };
  for (let i = 0; i < argv.length; i += 2) {
    const key = names[argv[i]];
    if (!key || i + 1 >= argv.length) usage('unknown or incomplete argument ' + argv[i]);
    args[key] = path.resolve(argv[i + 1]);
  }
  for (const k of ['serverBin', 'cliBin', 'out']) {
    if (!args[k]) usage('missing --' + k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()));
  }
  return args;
}

function usage(why) {
  console.error('dashboard_test: ' + why);
  console.error('usage: dashboard_test.mjs --server-bin PATH --cli-bin PATH --out DIR ' +
    '[--node-modules DIR] [--chromium PATH]');
  process.exit(2);
}

// Missing tools fail the test (never a silent skip) and say how to get them.
function loadPlaywright(args) {
  const problems = [];
  const pkg = path.join(args.nodeModules, 'playwright-core');
  if (!fs.existsSync(path.join(pkg, 'package.json'))) problems.push('npm playwright-core is not in ' + args.nodeModules);
  if (!fs.existsSync(args.chromium)) problems.push('Chromium is not at ' + args.chromium);
  for (const f of [args.serverBin, args.cliBin]) if (!fs.existsSync(f)) problems.push(f + ' does not exist (build first)');
  if (problems.length) {
    console.error('FAIL dashboard_browser: ' + problems.join('; ') +
      '. `./run test` installs Chromium (Debian package chromium) and playwright-core into .cache/npm-browser.');
    process.exit(1);
  }
  return createRequire(import.meta.url)(pkg);
}


// Training rows in two classes told apart by their words: learnable in
// seconds by the tiny preset, so a job's loss visibly falls.
function sentimentRows(count) {
  const good = ['great', 'excellent', 'wonderful', 'happy', 'love', 'superb', 'fine', 'nice'];
  const bad = ['terrible', 'awful', 'horrible', 'sad', 'hate', 'poor', 'bad', 'worst'];
  const lines = [];
  for (let i = 0; i < count; i++) {
    const positive = i % 2 === 0;
    const words = positive ? good : bad;
    lines.push(JSON.stringify({
      text: `the film was ${words[(i * 3) % 8]} and the music was ${words[(i * 5 + 1) % 8]}`,
      label: positive ? 'positive' : 'negative',
    }));
  }
  return lines.join('\n') + '\n';
}

// The first job: about 440 optimizer steps (86 training rows, 11 batches,
// 40 epochs) that log every 2 steps, so the loss chart gains points for
// about half a minute on a 2-core CPU.
const SHORT_PARAMS = {
  epochs: '40', batch_size: '8', max_seq_length: '32', learning_rate: '2e-3',
  warmup_ratio: '0', logging_steps: '2', eval_steps: '60', save_steps: '150', seed: '7',
};
// Jobs that would run for many minutes: they are cancelled or left queued.
const LONG_PARAMS = Object.assign({}, SHORT_PARAMS, { epochs: '1000' });

// ---- the server --------------------------------------------------------------

class Server extends LatheServer {
  // One JSON API call; returns the parsed body and fails on an error status.
  // Each call has its own connection (no keep-alive), so that no idle
  // connection of ours is open when the server is told to stop.
  api(method, route, token, body, contentType = 'application/json') {
    return new Promise((resolve, reject) => {
      const headers = { Authorization: 'Bearer ' + token };
      if (body !== undefined) Object.assign(headers, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) });
      const req = http.request(this.http + route, { method, headers, agent: false, timeout: 30_000 }, (resp) => {
        const chunks = [];
        resp.on('data', (c) => chunks.push(c));
        resp.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const ok = resp.statusCode >= 200 && resp.statusCode < 300;
          if (!ok) return reject(new TestFailure(`${method} ${route} answered ${resp.statusCode}: ${text.slice(0, 500)}`));
          try {
            resolve(text ? JSON.parse(text) : {});
          } catch (e) {
            reject(new TestFailure(`${method} ${route} answered no JSON: ${text.slice(0, 200)}`));
          }
        });
        resp.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new TestFailure(`${method} ${route}: no answer in 30 s`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  async submit(token, trainData, params) {
    const resp = await this.api('POST', '/v1/jobs', token, JSON.stringify({
      spec: { task: 'text-classification', model: 'preset:bert-tiny', train_data: trainData, params },
    }));
    check(resp.job && resp.job.id, 'POST /v1/jobs answered without a job id: ' + JSON.stringify(resp));
    return resp.job.id;
  }
}

// ---- the browser steps --------------------------------------------------------

const CONTROLS = ['cancel', 'pause', 'resume', 'checkpoint'];

async function login(page, token) {
  await page.getByTestId('token-input').waitFor({ state: 'visible' });
  await page.getByTestId('token-input').fill(token);
  await page.getByTestId('login').click();
}

async function logout(page) {
  await page.getByTestId('logout').click();
  await page.getByTestId('token-input').waitFor({ state: 'visible' });
  const stored = await page.evaluate(() => sessionStorage.getItem('lathe.token'));
  check(stored === null, 'logging out left the token in sessionStorage');
}

async function jobState(page) {
  const el = page.getByTestId('job-state');
  return (await el.count()) ? (await el.textContent()).trim() : '';
}

async function waitForState(page, states, timeoutMs) {
  return waitFor(`job state ${states.join(' or ')}`, timeoutMs, async () => {
    const s = await jobState(page);
    if (['FAILED'].includes(s) && !states.includes(s)) {
      const err = await page.getByTestId('job-error').textContent().catch(() => '');
      throw new TestFailure('the job FAILED: ' + err);
    }
    return states.includes(s) ? s : null;
  });
}

async function openJob(page, base, id) {
  await page.goto(`${base}/#/jobs/${id}`);
  await page.getByTestId('job-state').waitFor({ state: 'visible' });
}

async function countControls(page) {
  let n = 0;
  for (const c of CONTROLS) n += await page.getByTestId(c).count();
  return n;
}

async function runSteps(pw, args, server, cleanup) {
  const { out } = args;

  log('creating user viewer1 (role viewer) with the CLI');
  const cli = ['--server', server.grpc, '--token-file', path.join(server.dataDir, 'admin.token')];
  await runCli(args.cliBin, [...cli, 'users', 'create', 'viewer1', '--team', 'admin', '--role', 'viewer']);
  const created = JSON.parse(await runCli(args.cliBin, [...cli, '--output', 'json', 'tokens', 'create', '--user', 'viewer1']));
  const viewerToken = created.token;
  check(viewerToken, 'lathe tokens create printed no token');

  log('uploading a dataset and submitting the first job over HTTP');
  const admin = server.adminToken;
  const upload = await server.api('POST', '/v1/datasets?name=train.jsonl', admin, sentimentRows(96), 'application/octet-stream');
  const ref = upload.dataset && upload.dataset.ref;
  check(ref && ref.startsWith('dataset:'), 'dataset upload answered no dataset ref: ' + JSON.stringify(upload));
  const job1 = await server.submit(admin, ref, SHORT_PARAMS);

  const browser = await pw.chromium.launch({ executablePath: args.chromium, args: ['--no-sandbox'], timeout: 30_000 });
  cleanup.push(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('dialog', (d) => d.accept()); // the cancel confirmation

  log('admin logs in; the jobs page lists the job');
  await page.goto(server.http + '/');
  await login(page, admin);
  await waitFor('the header to show the admin user', 15_000, async () =>
    /ROLE_ADMIN|admin/.test(await page.getByTestId('whoami').textContent()));
  const row1 = page.locator(`[data-testid="job-row"][data-job-id="${job1}"]`);
  await row1.waitFor({ state: 'visible' });
  const row1Text = await row1.textContent();
  check(row1Text.includes('text-classification') && row1Text.includes('preset:bert-tiny') && row1Text.includes('admin'),
    'the job row lacks task, model or owner: ' + row1Text);
  check(!(await page.content()).includes(admin), 'the admin token is in the DOM after login');
  const storage = await page.evaluate(() => ({ local: localStorage.length, cookie: document.cookie }));
  check(storage.local === 0 && storage.cookie === '', 'the token went to localStorage or a cookie: ' + JSON.stringify(storage));
  await page.screenshot({ path: path.join(out, 'jobs.png'), fullPage: true });

  log(`opening ${job1}; waiting for it to run`);
  await page.locator(`[data-job-id="${job1}"] a`).first().click();
  await page.getByTestId('job-state').waitFor({ state: 'visible' });
  check(page.url().endsWith('#/jobs/' + job1), 'the job link led to ' + page.url());
  await waitForState(page, ['RUNNING', 'SUCCEEDED'], 60_000);
  const points = page.getByTestId('loss-point');
  const first = await waitFor('the loss chart to show a point while RUNNING', 60_000, async () => {
    const n = await points.count();
    return n > 0 && (await jobState(page)) === 'RUNNING' ? n : 0;
  }, 100);
  const second = await waitFor('the loss chart to gain points', 60_000, async () => {
    const n = await points.count();
    return n > first ? n : 0;
  });
  const stateAtSecond = await jobState(page);
  check(stateAtSecond === 'RUNNING' || stateAtSecond === 'SUCCEEDED', 'unexpected state ' + stateAtSecond);
  log(`loss chart: ${first} points, then ${second} (state ${stateAtSecond})`);

  log('waiting for SUCCEEDED');
  // Generous: the suite runs fuzzing and sanitizers beside this test.
  await waitForState(page, ['SUCCEEDED'], 400_000);
  const metrics = page.getByTestId('eval-metrics');
  await waitFor('final eval metrics with accuracy', 15_000, async () =>
    (await metrics.locator('th', { hasText: /^accuracy$/ }).count()) > 0);
  const finalPoints = await points.count();
  check(finalPoints >= second, `the loss chart lost points: ${finalPoints} < ${second}`);
  check(await countControls(page) === 0, 'a finished job still shows job controls');
  check((await page.getByTestId('eval-chart').locator('circle').count()) > 0, 'the eval chart has no points');
  check((await page.getByTestId('lr-chart').locator('circle').count()) > 0, 'the learning-rate chart has no points');

  log('downloading a checkpoint file from the page and checking its SHA-256');
  const download = page.getByTestId('download').first();
  await download.waitFor({ state: 'visible' });
  const row = download.locator('xpath=ancestor::tr[1]');
  const want = (await row.locator('code.sha').textContent()).trim();
  const [file] = await Promise.all([page.waitForEvent('download'), download.click()]);
  const saved = path.join(out, 'download-' + file.suggestedFilename());
  await file.saveAs(saved);
  const got = createHash('sha256').update(fs.readFileSync(saved)).digest('hex');
  check(got === want, `downloaded ${file.suggestedFilename()} has SHA-256 ${got}, the page lists ${want}`);
  fs.rmSync(saved);
  const curl = await row.locator('code.curl').textContent();
  check(curl.includes('$LATHE_TOKEN') && !curl.includes(admin), 'the curl command shows a token: ' + curl);
  await page.screenshot({ path: path.join(out, 'job.png'), fullPage: true });

  log('submitting a long second job and a third that waits behind it');
  const job2 = await server.submit(admin, ref, LONG_PARAMS);
  const job3 = await server.submit(admin, ref, LONG_PARAMS);

  log(`cancelling ${job2} from its page`);
  await openJob(page, server.http, job2);
  await waitForState(page, ['RUNNING'], 60_000);
  for (const c of ['cancel', 'pause', 'checkpoint']) {
    check(await page.getByTestId(c).count() === 1, `admin sees no ${c} button on a RUNNING job`);
  }
  check(await page.getByTestId('resume').count() === 0, 'a RUNNING job shows resume');
  await page.getByTestId('cancel').click();
  await waitForState(page, ['CANCELLED'], 60_000);
  await waitFor('the controls to go once CANCELLED', 10_000, async () => (await countControls(page)) === 0);

  log('the state filter of the jobs page');
  await page.goto(server.http + '/#/jobs');
  await page.getByTestId('state-filter').selectOption('CANCELLED');
  await waitFor(`only ${job2} listed as CANCELLED`, 15_000, async () => {
    const ids = await page.getByTestId('job-row').evaluateAll((rows) => rows.map((r) => r.dataset.jobId));
    return ids.length === 1 && ids[0] === job2;
  });

  log('the queue page: the local worker and the third job, queued or running on it');
  await page.goto(server.http + '/#/queue');
  await waitFor('the local worker in the workers table', 15_000, async () => {
    const rows = await page.getByTestId('worker-row').allTextContents();
    return rows.length === 1 && rows[0].includes('local-0') && rows[0].includes('cpu');
  });
  await waitFor(`${job3} in the queued or the running table`, 15_000, async () => {
    const ids = await page.locator('[data-testid="queued-row"], [data-testid="running-row"]')
      .evaluateAll((rows) => rows.map((r) => r.dataset.jobId));
    return ids.includes(job3);
  });

  log('viewer logs in; no job controls anywhere');
  await logout(page);
  await login(page, viewerToken);
  await waitFor('the header to show viewer1', 15_000, async () =>
    (await page.getByTestId('whoami').textContent()).includes('viewer1'));
  await openJob(page, server.http, job3);
  const s3 = await waitForState(page, ['QUEUED', 'RUNNING'], 30_000);
  await page.getByTestId('events').waitFor({ state: 'attached' });
  check(await countControls(page) === 0, `the viewer sees job controls on a ${s3} job`);

  log('a wrong token shows the login with an error');
  await logout(page);
  await login(page, 'lt_000000000000_' + '0'.repeat(64));
  await page.getByTestId('error').waitFor({ state: 'visible' });
  const message = (await page.getByTestId('error').textContent()).trim();
  check(message.length > 0, 'the error area is empty after a wrong token');
  check(await page.getByTestId('token-input').isVisible(), 'the login form is not shown after a wrong token');
  check(await page.getByTestId('jobs-table').count() === 0, 'the jobs table is shown to a wrong token');

  check(pageErrors.length === 0, 'the page threw: ' + pageErrors.join(' | '));
  await server.api('POST', `/v1/jobs/${job3}:cancel`, admin, '{}');
  return { first, second, finalPoints };
}

// ---- main ---------------------------------------------------------------------

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const pw = loadPlaywright(args);
  fs.mkdirSync(args.out, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lathe-browser-'));
  const cleanup = [];
  let timer;
  let ok = false;
  try {
    const server = new Server(args.serverBin, path.join(tmp, 'data'), path.join(args.out, 'server.log'));
    cleanup.push(() => server.stop());
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new TestFailure(`the test ran past ${TEST_TIMEOUT_MS / 1000} s`)), TEST_TIMEOUT_MS);
    });
    const steps = (async () => {
      log('starting lathe-server');
      await server.ready();
      log(`server: grpc ${server.grpc}, http ${server.http}`);
      return runSteps(pw, args, server, cleanup);
    })();
    steps.catch(() => {}); // after a timeout its failure is no news
    const result = await Promise.race([steps, timeout]);
    ok = true;
    console.log(`PASS dashboard_browser: login, jobs list, live loss chart (${result.first} -> ${result.second} -> ` +
      `${result.finalPoints} points), final metrics, checkpoint download, cancel, viewer without controls, ` +
      `wrong token refused, in ${elapsedSeconds().toFixed(1)} s`);
  } catch (err) {
    console.error('FAIL dashboard_browser: ' + (err instanceof TestFailure ? err.message : err.stack || err));
    console.error('server log: ' + path.join(args.out, 'server.log'));
  } finally {
    clearTimeout(timer);
    for (const f of cleanup.reverse()) {
      try { await f(); } catch (e) { console.error('cleanup: ' + e.message); }
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  process.exit(ok ? 0 : 1);
}

main();
