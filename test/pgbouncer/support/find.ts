/** Where the pgbouncer binary is: on PATH, or where Debian's package puts it (/usr/sbin). */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export function findPgbouncer(): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin']) {
    const candidate = join(dir, 'pgbouncer');
    if (dir && existsSync(candidate)) return candidate;
  }
  return undefined;
}

export function pgbouncerVersion(bin: string): string {
  return spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0]?.trim() ?? 'unknown';
}
