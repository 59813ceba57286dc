/**
 * The chaos suite, small: the compiled `dist/chaos/run.js` (what `npm run chaos` runs) with 100
 * bundles, three worker processes SIGKILLed at random every ~2 s for 15 s, one immediate
 * PostgreSQL restart, and providers failing (8 % 5xx, 3 % replies lost, 1 % hangs, 3 % definitive
 * no, plus ~3 % sold-out bundles). It runs its own dedicated embedded server, so it never disturbs
 * the other tests' server. Every invariant it checks must hold, and every bundle must end terminal.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { ChaosSummary } from '../src/chaos/run.js';

const RUNNER = fileURLToPath(new URL('../dist/chaos/run.js', import.meta.url));

function runChaos(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'warn' };
  // A dedicated embedded server, never whatever database the environment points at.
  delete env.DATABASE_URL;
  return new Promise((resolve) => {
    execFile(process.execPath, [RUNNER, ...args], { env, maxBuffer: 16 * 1024 * 1024, timeout: 220_000, killSignal: 'SIGINT' }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: unknown }).code as number | undefined) ?? 1 : 0;
      resolve({ code: typeof code === 'number' ? code : 1, stdout, stderr });
    });
  });
}

describe('chaos', () => {
  it('keeps every invariant through SIGKILLed workers, a PostgreSQL restart and faulty providers', async () => {
    expect(existsSync(RUNNER), `${RUNNER} is missing: run \`npx tsc -p tsconfig.json\` first`).toBe(true);
    const { code, stdout, stderr } = await runChaos([
      '--bundles', '100', '--workers', '3', '--seconds', '15',
      '--fail-rate', '0.08', '--late-rate', '0.03', '--hang-rate', '0.01', '--no-rate', '0.03',
      '--seed', '7', '--json',
    ]);
    let summary: ChaosSummary;
    try {
      summary = JSON.parse(stdout) as ChaosSummary;
    } catch {
      throw new Error(`chaos run printed no JSON summary (exit ${code}):\n${stdout}\n${stderr}`);
    }
    const context = JSON.stringify({ violations: summary.violations, states: summary.states, unexpected_exits: summary.unexpected_exits, logs: summary.logs });
    expect(summary.violations, context).toEqual([]);
    expect(code, stderr).toBe(0);
    expect(summary.ok).toBe(true);

    // Every bundle enqueued, and every one terminal.
    expect(summary.enqueued).toBe(100);
    const terminal = (summary.states.completed ?? 0) + (summary.states.compensated ?? 0) + (summary.states.dead ?? 0);
    expect(terminal, context).toBe(100);
    // The sold-out bundles (~3 %) and the definitive noes were compensated, not lost.
    expect(summary.states.compensated ?? 0).toBeGreaterThanOrEqual(3);
    expect(summary.states.completed ?? 0).toBeGreaterThan(50);

    // The chaos really happened: kills, one restart, and no fleet process died on its own.
    expect(summary.recovery.kills).toBeGreaterThanOrEqual(5);
    expect(summary.pg_restart).toMatchObject({ downtime_ms: expect.any(Number) });
    expect(summary.unexpected_exits).toEqual([]);
    // Every bundle a SIGKILL left in flight was claimed again by another worker.
    expect(summary.recovery.reclaimed).toBe(summary.recovery.in_flight_at_kill);
    if (summary.recovery.max_ms !== null) expect(summary.recovery.max_ms).toBeLessThan(15_000);
    // Replies were lost and replayed: the ledger saw repeated calls for the same key, one effect each.
    expect(summary.ledger.replayed_keys).toBeGreaterThan(0);
  }, 240_000);

  it('refuses bad usage with exit 2, naming the flag', async () => {
    expect(existsSync(RUNNER)).toBe(true);
    const missing = await runChaos(['--workers', '2']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--bundles: required/);
    const bad = await runChaos(['--bundles', '10', '--workers', '2', '--seconds', '5', '--fail-rate', '2']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--fail-rate: must be at most 1/);
    const unknown = await runChaos(['--bundles', '10', '--workers', '2', '--seconds', '5', '--frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/frobnicate/);
  }, 30_000);
});
