/**
 * Real bundlefleet processes (`node bin/bundlefleet ...`) for the scenarios that need them:
 * the provider simulator, workers that get SIGKILLed, a supervisor loop, a worker whose RSS we read.
 * Their output goes to files under bench/results/tmp/. Each is stopped by its own pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { TMP_DIR } from './server.js';
import { waitFor } from './util.js';

const BIN = fileURLToPath(new URL('../../bin/bundlefleet', import.meta.url));

export interface Child {
  proc: ChildProcess;
  pid: number;
  name: string;
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Everything it has written to stdout and stderr so far. */
  output(): string;
}

export function spawnCli(name: string, args: string[], env: Record<string, string>): Child {
  return spawnNode(name, [BIN, ...args], env);
}

/** `node ARGS` (e.g. `--import tsx some/script.ts`), its output in bench/results/tmp/NAME.log. */
export function spawnNode(name: string, args: string[], env: Record<string, string>): Child {
  mkdirSync(TMP_DIR, { recursive: true });
  const out = createWriteStream(`${TMP_DIR}${name}.log`);
  const proc = spawn(process.execPath, args, {
    env: { ...process.env, LOG_LEVEL: 'warn', LOG_FORMAT: 'json', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout!.pipe(out);
  proc.stderr!.pipe(out);
  let written = '';
  const keep = (d: Buffer) => {
    if (written.length < 100_000) written += d.toString();
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return {
    proc,
    pid: proc.pid!,
    name,
    output: () => written,
    async kill(signal = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** `bundlefleet providers` on a free port; resolves once it says where it listens. */
export async function startSimulator(latencyMs: number): Promise<{ url: string; child: Child }> {
  const child = spawnCli(`providers-${latencyMs}ms`, ['providers', '--port', '0', '--latency-ms', String(latencyMs)], {});
  let url: string | undefined;
  child.proc.stderr!.on('data', (d: Buffer) => {
    const m = /listening on (\S+)/.exec(d.toString());
    if (m) url = m[1];
  });
  await waitFor('provider simulator', () => url !== undefined || child.proc.exitCode !== null, { intervalMs: 20, timeoutMs: 30_000 });
  if (!url) throw new Error(`provider simulator exited (${child.proc.exitCode}); see ${TMP_DIR}${child.name}.log`);
  return { url, child };
}
