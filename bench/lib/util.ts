/** Small helpers shared by the benchmark: statistics, waiting, the machine, silent loggers. */
import { readFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem, platform, arch } from 'node:os';
import { createRequire } from 'node:module';
import { setTimeout as delay } from 'node:timers/promises';

export const sleep = (ms: number) => delay(ms);
export const now = () => performance.now();

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  if (!s.length) return NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Nearest-rank percentile: the smallest value with at least p % of the samples at or below it. */
export function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  if (!s.length) return NaN;
  const rank = Math.max(1, Math.ceil((p / 100) * s.length));
  return s[rank - 1]!;
}

/** Polls `check` every `intervalMs` until it returns true; throws after `timeoutMs`. */
export async function waitFor(what: string, check: () => Promise<boolean> | boolean, opts: { intervalMs?: number; timeoutMs?: number } = {}): Promise<void> {
  const deadline = now() + (opts.timeoutMs ?? 300_000);
  for (;;) {
    if (await check()) return;
    if (now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(opts.intervalMs ?? 5);
  }
}

export function round(n: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

const require = createRequire(import.meta.url);
export function packageVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(require.resolve(`${name}/package.json`), 'utf8')) as { version: string }).version;
  } catch {
    // A package whose "exports" hides package.json: read it beside the node_modules entry.
    try {
      const main = require.resolve(name);
      const root = main.slice(0, main.lastIndexOf(`/node_modules/${name}/`) + `/node_modules/${name}/`.length);
      return (JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { version: string }).version;
    } catch {
      return 'unknown';
    }
  }
}

export function machine() {
  const c = cpus();
  return {
    cpu: c[0]?.model.trim() ?? 'unknown',
    cores: c.length,
    memory_gib: round(totalmem() / 2 ** 30, 1),
    os: `${platform()} ${release()} ${arch()}`,
    node: process.version,
  };
}

export function load(): number[] {
  return loadavg().map((l) => round(l, 2));
}

/** Resident set size of a process, in MiB, from /proc (Linux). */
export function rssMiB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** A random sleep of 50 ms plus up to one poll interval, so arrivals are random against any polling loop. */
export function preSampleSleep(pollIntervalMs: number): Promise<void> {
  return sleep(50 + Math.random() * pollIntervalMs);
}

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/** CPU seconds (user + system) of this process so far. */
export function ownCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/**
 * One system's scenario 2 (enqueue one → start, idle worker), a sample at a time, so that the
 * systems compared can take turns: one sample of each in turn, each after its own pre-sample
 * sleep, so a drift in the machine's state over the minutes of the run falls on all of them alike.
 */
export interface LatencySampler {
  /** The system's poll interval, which sizes its pre-sample sleep (preSampleSleep). */
  pollIntervalMs: number;
  /** Enqueues one job and returns ms from just before the enqueue call to its handler's start. */
  sample(i: number): Promise<number>;
  close(): Promise<void>;
}

/** `samples` samples of each sampler (after `warmups` unrecorded ones), one of each in turn. */
export async function takeTurns(samplers: LatencySampler[], samples: number, warmups = 3): Promise<number[][]> {
  const out = samplers.map(() => [] as number[]);
  for (let i = 0; i < warmups + samples; i++) {
    for (const [k, s] of samplers.entries()) {
      await preSampleSleep(s.pollIntervalMs);
      const ms = await s.sample(i);
      if (i >= warmups) out[k]!.push(ms);
    }
  }
  return out;
}
