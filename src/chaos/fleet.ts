/**
 * The fleet under test: `bundlefleet worker` and `bundlefleet supervise --loop` processes, each
 * its own OS process writing to one log file. A process that dies without the harness asking is
 * recorded (a crash is a violation) and replaced, so the fleet stays at strength.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { ChaosSummary } from './options.js';

const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'bundlefleet');

export interface FleetProcess {
  name: string;
  role: 'worker' | 'supervisor';
  child: ChildProcess;
  exited: Promise<void>;
  /** Set before we kill or stop it, so its exit is not counted as a crash. */
  expected: boolean;
  /** SIGSTOPped by the harness and not yet continued. */
  paused: boolean;
}

export interface FleetSetup {
  runId: string;
  logFile: string;
  t0: number;
  /** Environment of workers (DATABASE_URL may point at the half-open proxy). */
  workerEnv: NodeJS.ProcessEnv;
  supervisorEnv: NodeJS.ProcessEnv;
  supervisorArgs: string[];
}

export class Fleet {
  readonly procs = new Set<FleetProcess>();
  readonly unexpected: ChaosSummary['unexpected_exits'] = [];
  private seq = 0;
  private supervisorSeq = 0;
  private closing = false;
  /** While PostgreSQL restarts, new workers wait: one starting then would refuse to start (exit 1), rightly. */
  private spawnsHeld = false;
  private queued = 0;
  lastSpawnAt = 0;

  constructor(private readonly setup: FleetSetup) {}

  private spawnProcess(role: FleetProcess['role'], args: string[], env: NodeJS.ProcessEnv, name: string): FleetProcess {
    this.lastSpawnAt = Date.now();
    const fd = openSync(this.setup.logFile, 'a');
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const proc: FleetProcess = { name, role, child, expected: false, paused: false, exited: new Promise<void>((r) => child.once('exit', () => r())) };
    child.once('exit', (code, signal) => {
      this.procs.delete(proc);
      if (proc.expected || this.closing) return;
      // Died on its own: record it and keep the fleet at strength.
      this.unexpected.push({ process: name, code, signal, at_s: (Date.now() - this.setup.t0) / 1000 });
      setTimeout(() => {
        if (this.closing) return;
        if (role === 'worker') this.startWorker();
        else this.startSupervisor();
      }, 500);
    });
    this.procs.add(proc);
    return proc;
  }

  startWorker(): void {
    if (this.closing) return;
    if (this.spawnsHeld) {
      this.queued++;
      return;
    }
    const name = `chaos-${this.setup.runId}-w${++this.seq}`;
    this.spawnProcess('worker', ['worker'], { ...this.setup.workerEnv, BUNDLEFLEET_WORKER_NAME: name }, name);
  }

  startSupervisor(): FleetProcess {
    const name = `chaos-${this.setup.runId}-supervisor${++this.supervisorSeq}`;
    return this.spawnProcess('supervisor', ['supervise', '--loop', ...this.setup.supervisorArgs], this.setup.supervisorEnv, name);
  }

  holdSpawns(): void {
    this.spawnsHeld = true;
  }

  releaseSpawns(): void {
    this.spawnsHeld = false;
    for (; this.queued > 0; this.queued--) this.startWorker();
  }

  /** Live processes of a role that the harness has not killed or paused. */
  running(role: FleetProcess['role'] = 'worker'): FleetProcess[] {
    return [...this.procs].filter((p) => p.role === role && !p.expected && !p.paused);
  }

  async kill(proc: FleetProcess): Promise<void> {
    proc.expected = true;
    proc.child.kill('SIGKILL');
    await proc.exited;
  }

  /** SIGSTOP: the process, its timers and its sockets freeze; its kernel still answers TCP. */
  pause(proc: FleetProcess): void {
    proc.paused = true;
    proc.child.kill('SIGSTOP');
  }

  resume(proc: FleetProcess): void {
    proc.paused = false;
    if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill('SIGCONT');
  }

  /** SIGTERM everyone (graceful), SIGKILL whoever is still there after `graceMs`. */
  async stopAll(graceMs = 8000): Promise<void> {
    this.closing = true;
    const all = [...this.procs];
    for (const p of all) {
      p.expected = true;
      if (p.paused) this.resume(p); // a stopped process would never see the SIGTERM
      p.child.kill('SIGTERM');
    }
    await Promise.race([Promise.all(all.map((p) => p.exited)), delay(graceMs, undefined, { ref: false })]);
    for (const p of [...this.procs]) p.child.kill('SIGKILL');
    await Promise.all(all.map((p) => p.exited));
  }

  /** Last-resort synchronous cleanup (process exit). */
  killAllNow(): void {
    this.closing = true;
    for (const p of this.procs) p.child.kill('SIGKILL');
  }
}
