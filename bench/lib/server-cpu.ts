/**
 * CPU seconds spent by the PostgreSQL server, read from /proc (issue 12: "CPU per 1,000 jobs,
 * worker process + PostgreSQL backends, from /proc"). The server is the postmaster found as the
 * parent of our own backend; its children are the backends and the background processes (WAL
 * writer, checkpointer, …), and a child that has exited is counted in the postmaster's cutime and
 * cstime once reaped. Only for a server on this machine: undefined otherwise (DATABASE_URL on
 * another host, or no /proc).
 */
import { readdirSync, readFileSync } from 'node:fs';
import type pg from 'pg';

const TICKS_PER_SECOND = 100; // USER_HZ: 100 on every Linux this runs on (sysconf(_SC_CLK_TCK))

function statFields(pid: number | string): string[] | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name is in parentheses and may contain spaces: fields start after the last ')'.
    return s.slice(s.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

// Offsets after the command name: 0 state, 1 ppid, …, 11 utime, 12 stime, 13 cutime, 14 cstime.
const ticks = (f: string[], withChildren: boolean) => Number(f[11]) + Number(f[12]) + (withChildren ? Number(f[13]) + Number(f[14]) : 0);

/** The postmaster's pid, or undefined when the server is not on this machine. */
export async function findPostmaster(pool: pg.Pool): Promise<number | undefined> {
  const { rows } = await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  const backend = statFields(rows[0]!.pid);
  const ppid = backend && Number(backend[1]);
  const parent = ppid ? statFields(ppid) : undefined;
  // The backend's parent must be a postgres process: a pid that happens to exist here is not enough.
  if (!parent) return undefined;
  try {
    if (!readFileSync(`/proc/${ppid}/cmdline`, 'utf8').includes('postgres')) return undefined;
  } catch {
    return undefined;
  }
  return ppid;
}

/** CPU seconds (user + system) of another process on this machine so far; NaN when it is gone. */
export function processCpuSeconds(pid: number): number {
  const f = statFields(pid);
  return f ? ticks(f, false) / TICKS_PER_SECOND : NaN;
}

/** The server's CPU seconds so far (postmaster, its live children and its reaped ones). */
export function serverCpuSeconds(postmaster: number): number {
  const own = statFields(postmaster);
  if (!own) return NaN;
  let total = ticks(own, true);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(entry);
    if (f && Number(f[1]) === postmaster) total += ticks(f, false);
  }
  return total / TICKS_PER_SECOND;
}
