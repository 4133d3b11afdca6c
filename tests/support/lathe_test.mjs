// What the Node tests of the HTTP listener share (tests/browser,
// tests/openai): failures, polling, progress lines, the CLI, and a real
// lathe-server with one local worker on kernel-chosen ports.

import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export class TestFailure extends Error {}

export function check(cond, message) {
  if (!cond) throw new TestFailure(message);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls fn until it returns a truthy value; fails with `what` after timeoutMs.
export async function waitFor(what, timeoutMs, fn, intervalMs = 200) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new TestFailure('timed out after ' + timeoutMs / 1000 + ' s waiting for ' + what);
    await sleep(intervalMs);
  }
}

const started = Date.now();
let step = 'starting';
// Prints a progress line with the seconds since the test began; a step's
// line also becomes currentStep(), the step a failure is reported in.
export function log(message, isStep = true) {
  if (isStep) step = message;
  console.log(`[${elapsedSeconds().toFixed(1).padStart(6)} s] ${message}`);
}
export const currentStep = () => step;
export const elapsedSeconds = () => (Date.now() - started) / 1000;

export function runCli(cliBin, args) {
  return new Promise((resolve, reject) => {
    execFile(cliBin, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new TestFailure(`lathe ${args.join(' ')} failed: ${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

export class LatheServer {
  constructor(bin, dataDir, logFile) {
    this.dataDir = dataDir;
    this.logFile = logFile;
    const out = fs.openSync(logFile, 'w');
    this.proc = spawn(bin, ['--data-dir', dataDir, '--listen', '127.0.0.1:0',
      '--metrics-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--local-workers', '1'],
    { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    this.exited = null;
    this.proc.on('exit', (code, signal) => { this.exited = { code, signal }; });
  }

  logTail(lines = 15) {
    try { return fs.readFileSync(this.logFile, 'utf8').split('\n').slice(-lines).join('\n'); } catch (e) { return ''; }
  }

  // Waits until server.json names both listeners: then `grpc` and
  // `httpAddress` are HOST:PORT, `http` its base URL, and `adminToken` the
  // first admin's token.
  async ready() {
    const file = path.join(this.dataDir, 'server.json');
    const info = await waitFor('DATA_DIR/server.json with a "http" address', 30_000, () => {
      if (this.exited) {
        throw new TestFailure(`lathe-server exited (${JSON.stringify(this.exited)}) before serving:\n${this.logTail()}`);
      }
      try {
        const j = JSON.parse(fs.readFileSync(file, 'utf8'));
        return j.grpc && j.http ? j : null;
      } catch (e) {
        return null; // not written yet
      }
    });
    this.grpc = info.grpc;
    this.httpAddress = info.http;
    this.http = 'http://' + info.http;
    this.adminToken = fs.readFileSync(path.join(this.dataDir, 'admin.token'), 'utf8').trim();
  }

  // SIGTERM, then SIGKILL after `graceMs`.
  async stop(graceMs = 20_000) {
    if (this.exited) return;
    this.proc.kill('SIGTERM');
    const deadline = Date.now() + graceMs;
    while (!this.exited && Date.now() < deadline) await sleep(100);
    if (!this.exited) {
      console.error(`lathe-server ignored SIGTERM for ${graceMs / 1000} s; killing it`);
      this.proc.kill('SIGKILL');
      while (!this.exited) await sleep(100);
    }
  }
}
