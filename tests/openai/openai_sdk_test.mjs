#!/usr/bin/env node
// The OpenAI-compatible subset of the HTTP API (/v1/files, /v1/fine_tuning/jobs)
// driven by the official `openai` npm SDK, pinned and unmodified.
//
//   node tests/openai/openai_sdk_test.mjs --server-bin build/bin/lathe-server \
//       --cli-bin build/bin/lathe [--node-modules .cache/npm-openai/node_modules]
//
// Starts the server with one local worker on kernel-chosen ports, creates a
// member and a viewer of team "ml" and a member of another team with the CLI,
// then with the SDK, as the member: uploads chat JSONL training and
// validation files, creates fine-tuning jobs on preset:gpt2-tiny (both
// hyperparameter forms), pages the job list, follows one job's events until
// it succeeds, lists its checkpoints, cancels, pauses and resumes others,
// checks the 400/401/403/404 errors the SDK maps to its error classes (the
// viewer's and the other team's included), and deletes a file. Exits 0 and prints one PASS line, or exits 1 naming the
// failed step. The server is always stopped.

import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  LatheServer, TestFailure, check, currentStep, elapsedSeconds, log, runCli, sleep, waitFor,
} from '../support/lathe_test.mjs';

const SDK_VERSION = '6.49.0';
const TEST_TIMEOUT_MS = 280_000; // CTest gives 300 s
const JOB_TIMEOUT_MS = 240_000;
const POLL_MS = 2_000;
const MODEL = 'preset:gpt2-tiny';
const HERE_FILE = fileURLToPath(import.meta.url);
const HERE = path.dirname(HERE_FILE);
const ROOT = path.resolve(HERE, '..', '..');

// ---- arguments and prerequisites -------------------------------------------

function parseArgs(argv) {
  const args = { nodeModules: path.join(ROOT, '.cache', 'npm-openai', 'node_modules') };
  const names = { '--server-bin': 'serverBin', '--cli-bin': 'cliBin', '--node-modules': 'nodeModules' };
  for (let i = 0; i < argv.length; i += 2) {
    const key = names[argv[i]];
    if (!key || i + 1 >= argv.length) usage('unknown or incomplete argument ' + argv[i]);
    args[key] = path.resolve(argv[i + 1]);
  }
  for (const k of ['serverBin', 'cliBin']) {
    if (!args[k]) usage('missing --' + k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()));
  }
  return args;
}

function usage(why) {
  console.error('openai_sdk_test: ' + why);
  console.error('usage: openai_sdk_test.mjs --server-bin PATH --cli-bin PATH [--node-modules DIR]');
  process.exit(2);
}

// A missing or different SDK fails the test (never a silent skip) and says
// how to get the pinned one.
function loadSdk(args) {
  const problems = [];
  const pkg = path.join(args.nodeModules, 'openai');
  let version = null;
  try {
    version = JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf8')).version;
  } catch (e) {
    problems.push('npm openai is not in ' + args.nodeModules);
  }
  if (version !== null && version !== SDK_VERSION) problems.push(`npm openai in ${args.nodeModules} is ${version}, not ${SDK_VERSION} (remove ${path.dirname(args.nodeModules)})`);
  for (const f of [args.serverBin, args.cliBin]) if (!fs.existsSync(f)) problems.push(f + ' does not exist (build first)');
  if (problems.length) {
    console.error('FAIL openai_sdk: ' + problems.join('; ') +
      `. \`./run test\` installs openai@${SDK_VERSION} into .cache/npm-openai.`);
    process.exit(1);
  }
  const sdk = createRequire(import.meta.url)(pkg);
  return { OpenAI: sdk.OpenAI || sdk.default, sdk };
}

// ---- small utilities -------------------------------------------------------

const show = (v) => JSON.stringify(v);
const isSeconds = (v) => Number.isInteger(v) && v > 1_500_000_000 && v < 10_000_000_000;

// Expects `promise` to reject with the SDK error class `cls` and `status`;
// returns the error.
async function expectError(what, promise, cls, status) {
  let err = null;
  try {
    const value = await promise;
    throw new TestFailure(`${what} succeeded; expected ${cls.name} (${status}): ${show(value).slice(0, 300)}`);
  } catch (e) {
    if (e instanceof TestFailure) throw e;
    err = e;
  }
  check(err instanceof cls && err.status === status,
    `${what}: expected ${cls.name} (${status}), got ${err && err.constructor.name} (${err && err.status}): ${err && err.message}`);
  check(err.error && typeof err.error.message === 'string' && err.error.message.length > 0,
    `${what}: the ${status} body has no error.message: ${show(err.error)}`);
  return err;
}

// Chat-format JSONL in the shape OpenAI fine-tuning takes: a system prompt,
// a question and its answer. Short additions the tiny preset learns a little
// of in a few steps.
function chatRows(count, offset = 0) {
  const lines = [];
  for (let i = 0; i < count; i++) {
    const a = (i + offset) % 10;
    const b = (i * 7 + offset + 3) % 10;
    lines.push(JSON.stringify({
      messages: [
        { role: 'system', content: 'You add numbers and answer with the sum only.' },
        { role: 'user', content: `What is ${a} plus ${b}?` },
        { role: 'assistant', content: `${a + b}` },
      ],
    }));
  }
  return lines.join('\n') + '\n';
}

// Preference rows in OpenAI's DPO layout: the right sum preferred, a wrong
// one not.
function preferenceRows(count) {
  const lines = [];
  for (let i = 0; i < count; i++) {
    const a = i % 10;
    const b = (i * 3 + 1) % 10;
    lines.push(JSON.stringify({
      input: { messages: [{ role: 'user', content: `What is ${a} plus ${b}?` }], tools: [] },
      preferred_output: [{ role: 'assistant', content: `${a + b}` }],
      non_preferred_output: [{ role: 'assistant', content: `${a + b + 1}` }],
    }));
  }
  return lines.join('\n') + '\n';
}

// ---- the server --------------------------------------------------------------

// ---- the steps -----------------------------------------------------------------

function checkFile(f, want, what) {
  check(f && f.object === 'file', `${what}: object is not "file": ${show(f)}`);
  check(f.id === want.id, `${what}: id ${f.id}, expected ${want.id}`);
  check(f.bytes === want.bytes, `${what}: bytes ${f.bytes}, expected ${want.bytes}`);
  check(f.filename === want.filename, `${what}: filename ${f.filename}, expected ${want.filename}`);
  check(f.purpose === 'fine-tune', `${what}: purpose ${f.purpose}`);
  check(f.status === 'processed', `${what}: status ${f.status}, expected processed`);
  check(isSeconds(f.created_at), `${what}: created_at is not Unix seconds: ${f.created_at}`);
}

async function upload(client, dir, name, text) {
  const p = path.join(dir, name);
  fs.writeFileSync(p, text);
  const want = {
    id: 'file-' + createHash('sha256').update(text).digest('hex'),
    bytes: Buffer.byteLength(text),
    filename: name,
  };
  const f = await client.files.create({ file: fs.createReadStream(p), purpose: 'fine-tune' });
  checkFile(f, want, `files.create(${name})`);
  return { file: f, path: p, want };
}

function checkJob(job, what) {
  check(job && job.object === 'fine_tuning.job', `${what}: object is not "fine_tuning.job": ${show(job)}`);
  check(typeof job.id === 'string' && /^job-[A-Za-z0-9_-]+$/.test(job.id), `${what}: id ${show(job.id)}`);
  check(isSeconds(job.created_at), `${what}: created_at is not Unix seconds: ${job.created_at}`);
  check(['queued', 'running', 'succeeded', 'failed', 'cancelled', 'paused'].includes(job.status),
    `${what}: unknown status ${show(job.status)}`);
  check(typeof job.organization_id === 'string' && job.organization_id.length > 0, `${what}: organization_id ${show(job.organization_id)}`);
  check(Array.isArray(job.result_files), `${what}: result_files is not a list: ${show(job.result_files)}`);
  check(Array.isArray(job.integrations), `${what}: integrations is not a list: ${show(job.integrations)}`);
  check(job.hyperparameters && typeof job.hyperparameters === 'object', `${what}: no hyperparameters`);
  check(job.method && ['supervised', 'dpo'].includes(job.method.type) && job.method[job.method.type] &&
    job.method[job.method.type].hyperparameters, `${what}: method is not supervised or dpo with hyperparameters: ${show(job.method)}`);
  check(Number.isInteger(job.seed), `${what}: seed ${show(job.seed)}`);
  return job;
}

async function runSteps(OpenAI, sdk, args, server, tmp) {
  const baseURL = `${server.http}/v1`;
  const clientFor = (apiKey) => new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30_000 });
  const admin = clientFor(server.adminToken);

  log('creating users with the CLI: alice (member) and viewer1 (viewer) of team ml, bob (member) of team other');
  const cli = ['--server', server.grpc, '--token-file', path.join(server.dataDir, 'admin.token')];
  const userClient = async (name, team, role) => {
    await runCli(args.cliBin, [...cli, 'users', 'create', name, '--team', team, '--role', role]);
    const created = JSON.parse(await runCli(args.cliBin, [...cli, '--output', 'json', 'tokens', 'create', '--user', name]));
    check(created.token, 'lathe tokens create printed no token');
    return clientFor(created.token);
  };
  const client = await userClient('alice', 'ml', 'member');
  const viewer = await userClient('viewer1', 'ml', 'viewer');
  const other = await userClient('bob', 'other', 'member');

  // -- files
  log('files.create: a chat JSONL training file and a validation file');
  const train = await upload(client, tmp, 'train.jsonl', chatRows(40));
  const valid = await upload(client, tmp, 'valid.jsonl', chatRows(8, 5));
  checkFile(await client.files.retrieve(train.file.id), train.want, 'files.retrieve');
  const listed = [];
  for await (const f of client.files.list()) listed.push(f);
  const listedIds = listed.map((f) => f.id);
  check(listedIds.includes(train.file.id) && listedIds.includes(valid.file.id),
    'files.list lacks the uploaded files: ' + show(listedIds));
  check(listedIds.indexOf(valid.file.id) < listedIds.indexOf(train.file.id),
    'files.list is not newest first: ' + show(listedIds));
  checkFile(listed.find((f) => f.id === train.file.id), train.want, 'files.list');
  const onePage = await client.files.list({ limit: 1 });
  check(onePage.data.length === 1 && onePage.has_more === true && onePage.data[0].id === valid.file.id,
    `files.list({limit: 1}) answered ${show(onePage.data.map((f) => f.id))}, has_more ${onePage.has_more}`);
  log("files.create with purpose 'assistants' is refused; train.jsonl, of the same bytes, stays");
  const badPurpose = await expectError("files.create with purpose 'assistants'",
    client.files.create({ file: fs.createReadStream(train.path), purpose: 'assistants' }), sdk.BadRequestError, 400);
  check(badPurpose.param === 'purpose', `the purpose error names param ${show(badPurpose.param)}, not "purpose"`);
  // The refused upload had the same bytes as train.jsonl: that file stays.
  checkFile(await client.files.retrieve(train.file.id), train.want, 'files.retrieve after a refused upload of the same bytes');
  const stillListed = [];
  for await (const f of client.files.list()) stillListed.push(f.id);
  check(show(stillListed) === show([valid.file.id, train.file.id]),
    'files.list after a refused upload of the same bytes as train.jsonl: ' + show(stillListed));

  // -- jobs
  log('fineTuning.jobs.create: the job followed to the end');
  const suffix = 'adder';
  const main = checkJob(await client.fineTuning.jobs.create({
    model: MODEL, training_file: train.file.id, validation_file: valid.file.id,
    hyperparameters: { n_epochs: 2, batch_size: 8 }, suffix, seed: 7, metadata: { pipeline: 'nightly' },
  }), 'jobs.create');
  check(['queued', 'running'].includes(main.status), 'a new job is ' + main.status);
  check(main.model === MODEL, 'jobs.create: model ' + main.model);
  check(main.training_file === train.file.id, 'jobs.create: training_file ' + main.training_file);
  check(main.validation_file === valid.file.id, 'jobs.create: validation_file ' + main.validation_file);
  check(main.seed === 7, 'jobs.create: seed ' + main.seed);
  check(main.organization_id === 'ml', 'jobs.create: organization_id ' + show(main.organization_id) + ', expected the team "ml"');
  check(main.user_provided_suffix === suffix, 'jobs.create: user_provided_suffix ' + show(main.user_provided_suffix));
  check(show(main.metadata) === show({ pipeline: 'nightly' }), 'jobs.create: metadata ' + show(main.metadata));
  check(main.hyperparameters.n_epochs === 2 && main.hyperparameters.batch_size === 8,
    'jobs.create: hyperparameters ' + show(main.hyperparameters));
  check(main.method.supervised.hyperparameters.n_epochs === 2, 'jobs.create: method ' + show(main.method));
  check(main.fine_tuned_model === null && main.finished_at === null && main.error === null,
    `a new job has fine_tuned_model ${show(main.fine_tuned_model)}, finished_at ${show(main.finished_at)}, error ${show(main.error)}`);

  log('three more jobs behind it (one through method.supervised)');
  const viaMethod = checkJob(await client.fineTuning.jobs.create({
    model: MODEL, training_file: train.file.id,
    method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 1, batch_size: 'auto', learning_rate_multiplier: 'auto' } } },
  }), 'jobs.create with method');
  check(viaMethod.hyperparameters.n_epochs === 1 && viaMethod.method.supervised.hyperparameters.n_epochs === 1,
    'jobs.create with method: n_epochs ' + show(viaMethod.hyperparameters));
  check(viaMethod.validation_file === null && viaMethod.metadata === null && viaMethod.user_provided_suffix == null,
    `a job without them has validation_file ${show(viaMethod.validation_file)}, metadata ${show(viaMethod.metadata)}, ` +
    `user_provided_suffix ${show(viaMethod.user_provided_suffix)}`);
  // Long enough not to finish before they are paused or cancelled.
  const toPause = checkJob(await client.fineTuning.jobs.create({
    model: MODEL, training_file: train.file.id, hyperparameters: { n_epochs: 20, batch_size: 1 },
  }), 'jobs.create');
  const long = checkJob(await client.fineTuning.jobs.create({
    model: MODEL, training_file: train.file.id, hyperparameters: { n_epochs: 20, batch_size: 1 },
  }), 'jobs.create');
  const mine = [long.id, toPause.id, viaMethod.id, main.id]; // newest first

  log('fineTuning.jobs.list({limit: 2}) paged to the end');
  const seen = [];
  for await (const j of client.fineTuning.jobs.list({ limit: 2 })) seen.push(checkJob(j, 'jobs.list').id);
  check(show(seen) === show(mine), `jobs.list paged ${show(seen)}, expected ${show(mine)} (each once, newest first)`);
  const pages = [];
  for await (const page of (await client.fineTuning.jobs.list({ limit: 2 })).iterPages()) {
    pages.push({ ids: page.data.map((j) => j.id), has_more: page.has_more });
  }
  check(pages.length === 2 && pages.every((p) => p.ids.length === 2) && pages[0].has_more === true && pages[1].has_more === false,
    'jobs.list({limit: 2}) pages: ' + show(pages));

  log(`fineTuning.jobs.cancel(${viaMethod.id}) while it waits`);
  const cancelling = checkJob(await client.fineTuning.jobs.cancel(viaMethod.id), 'jobs.cancel');
  check(cancelling.id === viaMethod.id, 'jobs.cancel answered job ' + cancelling.id);
  await waitFor(`${viaMethod.id} to be cancelled`, 30_000, async () =>
    (await client.fineTuning.jobs.retrieve(viaMethod.id)).status === 'cancelled', 500);

  log(`fineTuning.jobs.pause(${toPause.id}) and resume`);
  const s0 = (await client.fineTuning.jobs.retrieve(toPause.id)).status;
  check(['queued', 'running'].includes(s0), `${toPause.id} is ${s0} before pausing`);
  checkJob(await client.fineTuning.jobs.pause(toPause.id), 'jobs.pause');
  await waitFor(`${toPause.id} to be paused`, 60_000, async () =>
    (await client.fineTuning.jobs.retrieve(toPause.id)).status === 'paused', 500);
  checkJob(await client.fineTuning.jobs.resume(toPause.id), 'jobs.resume');
  await waitFor(`${toPause.id} to be queued or running again`, 30_000, async () =>
    ['queued', 'running'].includes((await client.fineTuning.jobs.retrieve(toPause.id)).status), 500);
  checkJob(await client.fineTuning.jobs.cancel(toPause.id), 'jobs.cancel');
  await waitFor(`${toPause.id} to be cancelled`, 30_000, async () =>
    (await client.fineTuning.jobs.retrieve(toPause.id)).status === 'cancelled', 500);

  log(`following ${main.id}: retrieve and listEvents every ${POLL_MS / 1000} s`);
  const followed = new Map();
  let job = main;
  const deadline = Date.now() + JOB_TIMEOUT_MS;
  for (;;) {
    job = checkJob(await client.fineTuning.jobs.retrieve(main.id), 'jobs.retrieve');
    const page = await client.fineTuning.jobs.listEvents(main.id, { limit: 50 });
    check(page.data.length <= 50, `listEvents({limit: 50}) answered ${page.data.length} events`);
    for (const ev of [...page.data].reverse()) {
      if (followed.has(ev.id)) continue;
      followed.set(ev.id, ev);
      if (ev.type === 'metrics') log(`  metrics ${show(ev.data)}`, false);
      else log(`  ${ev.level}: ${ev.message}`, false);
    }
    if (job.status === 'succeeded') break;
    check(!['failed', 'cancelled'].includes(job.status), `${main.id} is ${job.status}: ${show(job.error)}`);
    check(Date.now() < deadline, `${main.id} did not succeed in ${JOB_TIMEOUT_MS / 1000} s (it is ${job.status})`);
    await sleep(POLL_MS);
  }
  check(job.fine_tuned_model === 'job:' + main.id, `fine_tuned_model ${show(job.fine_tuned_model)}, expected "job:${main.id}"`);
  check(isSeconds(job.finished_at) && job.finished_at >= job.created_at, 'finished_at ' + show(job.finished_at));
  check(job.error === null, 'a succeeded job has error ' + show(job.error));

  log('listEvents paged to the end (limit 50 and limit 3 agree)');
  const events = [];
  for await (const ev of client.fineTuning.jobs.listEvents(main.id, { limit: 50 })) events.push(ev);
  const small = [];
  for await (const ev of client.fineTuning.jobs.listEvents(main.id, { limit: 3 })) small.push(ev.id);
  check(show(small) === show(events.map((e) => e.id)), 'listEvents with limit 3 and limit 50 page differently');
  check(new Set(small).size === small.length, 'listEvents repeats an event');
  for (const [i, ev] of events.entries()) {
    check(ev.object === 'fine_tuning.job.event' && /^ftevent-/.test(ev.id) && isSeconds(ev.created_at) &&
      ['info', 'warn', 'error'].includes(ev.level) && ['message', 'metrics'].includes(ev.type) &&
      typeof ev.message === 'string', 'a malformed event: ' + show(ev));
    check(i === 0 || events[i - 1].created_at >= ev.created_at, 'listEvents is not newest first at ' + show(ev));
  }
  for (const id of followed.keys()) check(small.includes(id), `event ${id} seen while following is not in the full list`);
  const lossOf = (ev) => ev.data && Object.entries(ev.data).find(([k, v]) => /loss/.test(k) && Number.isFinite(v));
  const metrics = events.filter((ev) => ev.type === 'metrics' && lossOf(ev));
  check(metrics.length > 0, 'no metrics event carries a numeric loss: ' + show(events.filter((e) => e.type === 'metrics').slice(0, 3)));
  check(events.some((ev) => ev.type === 'message' && ev.message.length > 0), 'no message event');

  log('fineTuning.jobs.checkpoints.list');
  const checkpoints = [];
  for await (const c of client.fineTuning.jobs.checkpoints.list(main.id)) checkpoints.push(c);
  check(checkpoints.length > 0, `${main.id} lists no checkpoints`);
  for (const c of checkpoints) {
    check(c.object === 'fine_tuning.job.checkpoint' && /^ftckpt-/.test(c.id) && isSeconds(c.created_at) &&
      c.fine_tuning_job_id === main.id, 'a malformed checkpoint: ' + show(c));
    check(Number.isInteger(c.step_number) && c.step_number > 0, 'checkpoint step_number ' + show(c.step_number));
    check(c.fine_tuned_model_checkpoint === `job:${main.id}@${c.step_number}`,
      `fine_tuned_model_checkpoint ${show(c.fine_tuned_model_checkpoint)}, expected "job:${main.id}@${c.step_number}"`);
    check(c.metrics && typeof c.metrics === 'object', 'a checkpoint without metrics: ' + show(c));
  }

  log(`cancelling ${long.id} once it runs`);
  await waitFor(`${long.id} to run`, 60_000, async () => {
    const s = (await client.fineTuning.jobs.retrieve(long.id)).status;
    check(['queued', 'running'].includes(s), `${long.id} is ${s} before it was cancelled`);
    return s === 'running';
  }, 500);
  checkJob(await client.fineTuning.jobs.cancel(long.id), 'jobs.cancel');
  const cancelled = await waitFor(`${long.id} to be cancelled`, 60_000, async () => {
    const j = await client.fineTuning.jobs.retrieve(long.id);
    return j.status === 'cancelled' ? j : null;
  }, 500);
  check(cancelled.fine_tuned_model === null, 'a cancelled job has fine_tuned_model ' + show(cancelled.fine_tuned_model));

  log("errors: unknown job 404, wrong key 401, viewer 403, another team's 404, unknown training file 4xx");
  await expectError('jobs.retrieve(job-000000000000)',
    client.fineTuning.jobs.retrieve('job-000000000000'), sdk.NotFoundError, 404);
  await expectError('jobs.cancel(job-000000000000)',
    client.fineTuning.jobs.cancel('job-000000000000'), sdk.NotFoundError, 404);
  await expectError('jobs.list with a wrong key',
    clientFor('lt_000000000000_' + '0'.repeat(64)).fineTuning.jobs.list(), sdk.AuthenticationError, 401);
  await expectError('files.list with a wrong key',
    clientFor('lt_000000000000_' + '0'.repeat(64)).files.list(), sdk.AuthenticationError, 401);
  await expectError('jobs.create by a viewer',
    viewer.fineTuning.jobs.create({ model: MODEL, training_file: train.file.id }), sdk.PermissionDeniedError, 403);
  const viewerSees = [];
  for await (const j of viewer.fineTuning.jobs.list()) viewerSees.push(j.id);
  check(show(viewerSees) === show(mine), `the viewer's jobs.list answered ${show(viewerSees)}, expected ${show(mine)}`);
  await expectError("jobs.retrieve of team ml's job by team other",
    other.fineTuning.jobs.retrieve(main.id), sdk.NotFoundError, 404);
  await expectError("jobs.cancel of team ml's job by team other",
    other.fineTuning.jobs.cancel(main.id), sdk.NotFoundError, 404);
  await expectError("jobs.listEvents of team ml's job by team other",
    other.fineTuning.jobs.listEvents(main.id), sdk.NotFoundError, 404);
  await expectError("jobs.checkpoints.list of team ml's job by team other",
    other.fineTuning.jobs.checkpoints.list(main.id), sdk.NotFoundError, 404);
  await expectError("files.retrieve of team ml's file by team other",
    other.files.retrieve(train.file.id), sdk.NotFoundError, 404);
  const otherSees = { jobs: [], files: [] };
  for await (const j of other.fineTuning.jobs.list()) otherSees.jobs.push(j.id);
  for await (const f of other.files.list()) otherSees.files.push(f.id);
  check(otherSees.jobs.length === 0 && otherSees.files.length === 0, 'team other lists ' + show(otherSees));
  const adminSees = [];
  for await (const j of admin.fineTuning.jobs.list({ limit: 3 })) adminSees.push(j.id);
  check(show(adminSees) === show(mine), `the admin's jobs.list answered ${show(adminSees)}, expected ${show(mine)}`);
  let unknownFile = null;
  try {
    await client.fineTuning.jobs.create({ model: MODEL, training_file: 'file-' + '0'.repeat(64) });
  } catch (e) {
    unknownFile = e;
  }
  check(unknownFile instanceof sdk.APIError && [400, 404].includes(unknownFile.status),
    'jobs.create with an unknown training_file: expected 400 or 404, got ' + (unknownFile ? unknownFile.message : 'success'));

  log('files.delete');
  const deleted = await client.files.delete(valid.file.id);
  check(deleted.id === valid.file.id && deleted.object === 'file' && deleted.deleted === true, 'files.delete answered ' + show(deleted));
  await expectError('files.retrieve of a deleted file', client.files.retrieve(valid.file.id), sdk.NotFoundError, 404);
  await expectError('files.retrieve of a deleted file by the admin', admin.files.retrieve(valid.file.id), sdk.NotFoundError, 404);
  const after = [];
  for await (const f of client.files.list()) after.push(f.id);
  check(!after.includes(valid.file.id) && after.includes(train.file.id), 'files.list after the delete: ' + show(after));

  log('fineTuning.jobs.create with method dpo on preference rows in OpenAI\'s layout, followed to the end');
  const prefs = await upload(client, tmp, 'prefs.jsonl', preferenceRows(24));
  const dpo = checkJob(await client.fineTuning.jobs.create({
    model: MODEL, training_file: prefs.file.id,
    method: { type: 'dpo', dpo: { hyperparameters: { beta: 0.2, n_epochs: 1, batch_size: 4 } } },
  }), 'jobs.create with method dpo');
  check(dpo.method.type === 'dpo' && dpo.method.dpo.hyperparameters.beta === 0.2 &&
    dpo.method.dpo.hyperparameters.n_epochs === 1 && dpo.hyperparameters.batch_size === 4,
    'jobs.create with method dpo: method ' + show(dpo.method));
  const dpoDone = await waitFor(`${dpo.id} to succeed`, JOB_TIMEOUT_MS / 2, async () => {
    const j = await client.fineTuning.jobs.retrieve(dpo.id);
    check(!['failed', 'cancelled'].includes(j.status), `${dpo.id} is ${j.status}: ${show(j.error)}`);
    return j.status === 'succeeded' ? j : null;
  }, POLL_MS);
  check(dpoDone.method.type === 'dpo', 'the finished dpo job reports method ' + show(dpoDone.method));
  const dpoEvents = [];
  for await (const ev of client.fineTuning.jobs.listEvents(dpo.id, { limit: 50 })) dpoEvents.push(ev);
  check(dpoEvents.some((ev) => ev.type === 'metrics' && ev.data && Number.isFinite(ev.data.reward_accuracy)),
    'no evaluation event of the dpo job carries reward_accuracy: ' + show(dpoEvents.filter((e) => e.type === 'metrics')));
  await expectError("jobs.create with method type 'reinforcement'", client.fineTuning.jobs.create({
    model: MODEL, training_file: prefs.file.id, method: { type: 'reinforcement' },
  }), sdk.BadRequestError, 400);

  return { events: events.length, metrics: metrics.length, checkpoints: checkpoints.length, pages: pages.length };
}

// The SDK's requests go through Node's fetch, which keeps idle connections
// open; closing them lets the server stop without waiting for them to time out.
async function closeIdleConnections() {
  const dispatcher = globalThis[Symbol.for('undici.globalDispatcher.1')];
  if (!dispatcher || typeof dispatcher.close !== 'function') return;
  await Promise.race([dispatcher.close().catch(() => {}), sleep(2_000)]);
}

// ---- main ---------------------------------------------------------------------

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { OpenAI, sdk } = loadSdk(args);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lathe-openai-'));
  const logFile = path.join(tmp, 'server.log');
  let server = null;
  let timer;
  let ok = false;
  try {
    server = new LatheServer(args.serverBin, path.join(tmp, 'data'), logFile);
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new TestFailure(`the test ran past ${TEST_TIMEOUT_MS / 1000} s`)), TEST_TIMEOUT_MS);
    });
    const steps = (async () => {
      log(`starting lathe-server; openai ${SDK_VERSION} from ${args.nodeModules}`);
      await server.ready();
      log(`server: grpc ${server.grpc}, http ${server.http}`);
      return runSteps(OpenAI, sdk, args, server, tmp);
    })();
    steps.catch(() => {}); // after a timeout its failure is no news
    const r = await Promise.race([steps, timeout]);
    ok = true;
    console.log(`PASS openai_sdk: openai ${SDK_VERSION} against lathe-server: files create/retrieve/list/delete, ` +
      `4 fine-tuning jobs listed over ${r.pages} pages, one followed to succeeded (${r.events} events, ` +
      `${r.metrics} with a loss, ${r.checkpoints} checkpoints), cancel waiting and running, pause/resume, ` +
      `400/401/403/404 errors (viewer, other team), in ${elapsedSeconds().toFixed(1)} s`);
  } catch (err) {
    // An SDK error: its class (the HTTP status it stands for) and where in this file.
    const where = String((err && err.stack) || '').split('\n').filter((l) => l.includes(path.basename(HERE_FILE))).join('\n');
    console.error(`FAIL openai_sdk at "${currentStep()}": ` +
      (err instanceof TestFailure ? err.message : `${err && err.constructor.name}: ${err && err.message}\n${where}`));
    if (server) console.error('server log (last lines):\n' + server.logTail(40));
  } finally {
    clearTimeout(timer);
    await closeIdleConnections();
    if (server) {
      try { await server.stop(15_000); } catch (e) { console.error('stopping the server: ' + e.message); }
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  process.exit(ok ? 0 : 1);
}

main();
