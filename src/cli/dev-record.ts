/**
 * `.bundlefleet/dev.json`: which `bundlefleet dev` runs for a project and where, so a second
 * `npm start` there can say so instead of dying on a taken port.
 */
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface DevRecord {
  pid: number;
  startedAt: string;
  statusPage: string;
  providers: string | null;
  database: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A pid reused by an unrelated process after a crash is not our dev: check its command line where we can.
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('bundlefleet');
  } catch {
    return true;
  }
}

export function devRecordPath(home: string): string {
  return join(home, 'dev.json');
}

/** The record of a `dev` still running for this project; undefined when none (or it died). */
export async function runningDev(home: string): Promise<DevRecord | undefined> {
  try {
    const record = JSON.parse(await readFile(devRecordPath(home), 'utf8')) as DevRecord;
    return record.pid !== process.pid && alive(record.pid) ? record : undefined;
  } catch {
    return undefined;
  }
}

/** Writes the record; true when `home` had to be made for it (dev with DATABASE_URL and no project `.bundlefleet/`). */
export async function writeDevRecord(home: string, record: DevRecord): Promise<boolean> {
  const made = (await mkdir(home, { recursive: true })) !== undefined;
  await writeFile(devRecordPath(home), `${JSON.stringify(record, null, 2)}\n`);
  return made;
}

/**
 * Removes the record if it is still ours (a later dev may have replaced it), and `home` too when
 * it was made for the record and nothing else has been put there since.
 */
export async function removeDevRecord(home: string, removeHome = false): Promise<void> {
  const record = await readFile(devRecordPath(home), 'utf8').then((t) => JSON.parse(t) as DevRecord, () => undefined);
  if (record?.pid === process.pid) await rm(devRecordPath(home), { force: true });
  if (removeHome) await rmdir(home).catch(() => {}); // only when empty
}

export function alreadyRunningMessage(record: DevRecord): string {
  return (
    `bundlefleet dev is already running for this project (pid ${record.pid}, since ${record.startedAt}): ` +
    `status page ${record.statusPage}/, providers ${record.providers ?? 'from PROVIDERS_URL'}, database ${record.database}. ` +
    `Use that one, or stop it first (Ctrl-C in its terminal, or kill ${record.pid}).`
  );
}
