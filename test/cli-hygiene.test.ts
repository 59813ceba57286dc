/**
 * CLI hygiene (issue 10), each checked on the real binary: one JSON document on stdout with logs
 * on stderr, a quiet exit when the reader of stdout goes away, NO_COLOR / FORCE_COLOR, no
 * internal fields in operator output, settings validated at start-up (flags and variables),
 * short usage errors, examples in every command's help, and a README that lists every flag with
 * its variable.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, vi } from 'vitest';
import { createTestDb } from './support/db.js';
import { cli, expectNoStack, expectRefusal, jsonLines } from './support/cli.js';
import { enqueueVip } from './support/fleet.js';
import { shouldColor } from '../src/logger.js';
import { routes } from '../src/http/routes.js';
import { printJson, reportError, requestJsonOutput } from '../src/cli/context.js';
import { NotFound } from '../src/errors.js';

const NO_DB = 'postgres://u:secret@127.0.0.1:1/none';
const ESC = '\u001b[';

describe('stdout holds the output, stderr the logs', () => {
  it('supervise --json prints one JSON document even when the pass logs (an alert at error level)', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    await db.pool.query(`UPDATE bundles SET state = 'dead', phase = 'undo', finished_at = now() WHERE id = $1`, [b!.vip_bundle_id]);
    const run = await cli(db.url, ['supervise', '--json'], { env: { LOG_LEVEL: 'info', LOG_FORMAT: 'json' } });
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(report.ran).toBe(true);
    expect(report.alerts_raised).toBe(1);
    // A subcommand's --json is its own, although its parent command has a --json too.
    const [alert] = JSON.parse((await cli(db.url, ['alerts', '--json'])).stdout);
    const ack = await cli(db.url, ['alerts', 'ack', String(alert.id), '--json']);
    expect(ack.code, ack.stderr).toBe(0);
    expect(JSON.parse(ack.stdout)).toMatchObject({ id: alert.id, bundle_id: b!.vip_bundle_id });
    // The logs went to stderr, as JSON lines.
    const logs = jsonLines(run.stderr);
    expect(logs.some((l) => String(l.msg).startsWith('alert:') && l.bundleId === b!.vip_bundle_id)).toBe(true);
  });
  it('a process that is not the CLI (the chaos runner, a library user) logs to stderr: its stdout stays one document', async () => {
    // The chaos runner prints its summary on stdout; a pool warning from its own pool once landed
    // there too (CI, stop 15) and made the summary unparseable. Only the CLI's long-running
    // commands choose stdout for their logs.
    const logger = fileURLToPath(new URL('../dist/logger.js', import.meta.url));
    const script = `const { rootLogger } = await import(${JSON.stringify(logger)}); rootLogger().warn({ where: 'pool' }, 'waited 3.0 s for a database connection'); process.stdout.write('{"ok":true}\\n');`;
    const run = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) =>
      execFile(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, LOG_FORMAT: 'json', LOG_LEVEL: 'info' } }, (err, stdout, stderr) => (err ? reject(err) : resolve({ stdout, stderr }))),
    );
    expect(JSON.parse(run.stdout)).toEqual({ ok: true });
    expect(jsonLines(run.stderr).some((l) => l.where === 'pool')).toBe(true);
  });
});

describe('a reader that goes away', () => {
  it('help and inspect exit 0 without a stack trace when stdout is closed (`| head`)', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    for (const args of [['help', 'enqueue'], ['enqueue', '--help'], ['inspect', b!.vip_bundle_id], ['list']]) {
      const run = await cli(db.url, args, { closeStdout: true });
      expect(run.stderr, args.join(' ')).toBe('');
      expect(run.code, args.join(' ')).toBe(0);
    }
  });

  it("list's next-page hint is not said once the reader has gone (`list --limit 2 | head -c1`)", async () => {
    const db = await createTestDb();
    await enqueueVip(db.pool, 3);
    const read = await cli(db.url, ['list', '--limit', '2']);
    expect(read.stderr).toMatch(/^next page: /);
    for (let i = 0; i < 3; i++) {
      const run = await cli(db.url, ['list', '--limit', '2'], { closeStdout: true });
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
    }
  });

  it('a one-shot command whose log reader went away still prints its result and exits 0', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    await db.pool.query(`UPDATE bundles SET state = 'dead', phase = 'undo', finished_at = now() WHERE id = $1`, [b!.vip_bundle_id]);
    const run = await cli(db.url, ['supervise', '--json'], { closeStderr: true, env: { LOG_LEVEL: 'debug', LOG_FORMAT: 'json' } });
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).alerts_raised).toBe(1);
  });
});

describe('colour', () => {
  it('follows NO_COLOR and FORCE_COLOR (FORCE_COLOR wins, as in Node), else the terminal', () => {
    expect(shouldColor({}, true)).toBe(true);
    expect(shouldColor({}, false)).toBe(false);
    expect(shouldColor({ NO_COLOR: '1' }, true)).toBe(false);
    expect(shouldColor({ NO_COLOR: '' }, true)).toBe(true);
    expect(shouldColor({ FORCE_COLOR: '1' }, false)).toBe(true);
    expect(shouldColor({ FORCE_COLOR: '' }, false)).toBe(true);
    expect(shouldColor({ FORCE_COLOR: '0' }, true)).toBe(false);
    expect(shouldColor({ FORCE_COLOR: 'false' }, true)).toBe(false);
    expect(shouldColor({ FORCE_COLOR: '1', NO_COLOR: '1' }, false)).toBe(true);
    expect(shouldColor({ TERM: 'dumb' }, true)).toBe(false);
  });

  it('the binary colours its pretty logs with FORCE_COLOR=1 and not with NO_COLOR=1', async () => {
    const db = await createTestDb();
    const [b, c] = await enqueueVip(db.pool, 2);
    const kill = (id: string) => db.pool.query(`UPDATE bundles SET state = 'dead', phase = 'undo', finished_at = now() WHERE id = $1`, [id]);
    await kill(b!.vip_bundle_id);
    const env = { LOG_LEVEL: 'info', LOG_FORMAT: 'pretty' };
    const forced = await cli(db.url, ['supervise', '--json'], { env: { ...env, FORCE_COLOR: '1' } });
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stderr).toContain('alert:');
    expect(forced.stderr).toContain(ESC);
    expect(forced.stdout).not.toContain(ESC);
    await kill(c!.vip_bundle_id);
    const plain = await cli(db.url, ['supervise', '--json'], { env: { ...env, NO_COLOR: '1' } });
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stderr).toContain('alert:');
    expect(plain.stderr).not.toContain(ESC);
  });
});

describe('operator output', () => {
  it('cancel --json and retry --json print the bundle ids and states, nothing internal', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    const cancel = await cli(db.url, ['cancel', b!.vip_bundle_id, '--json']);
    expect(cancel.code, cancel.stderr).toBe(0);
    expect(JSON.parse(cancel.stdout)).toEqual({ vip_bundle_id: b!.vip_bundle_id, booking_id: b!.booking_id, from_state: 'pending', state: 'compensating' });
    await db.pool.query(`UPDATE bundles SET state = 'dead', phase = 'undo', finished_at = now() WHERE id = $1`, [b!.vip_bundle_id]);
    const retry = await cli(db.url, ['retry', b!.booking_id, '--json']);
    expect(retry.code, retry.stderr).toBe(0);
    expect(JSON.parse(retry.stdout)).toEqual({ vip_bundle_id: b!.vip_bundle_id, booking_id: b!.booking_id, from_state: 'dead', state: 'compensating' });
  });
});

describe('settings', () => {
  it('a malformed DATABASE_URL or --database-url is exit 2 naming it, without echoing the value', async () => {
    for (const run of [
      await cli('not-a-url', ['stats']),
      await cli(NO_DB, ['stats', '--database-url', 'mysql://u:secret@h/db']),
    ]) {
      expect(run.code, run.stderr).toBe(2);
      expect(run.stderr).toMatch(/--database-url \(DATABASE_URL\): /);
      expect(run.stderr).not.toContain('secret');
      expect(run.stderr).not.toContain('ENOTFOUND');
      expectNoStack(run);
    }
  });

  it('--database-url is taken over DATABASE_URL, by every database command', async () => {
    const db = await createTestDb();
    const stats = await cli(NO_DB, ['stats', '--json', '--database-url', db.url]);
    expect(stats.code, stats.stderr).toBe(0);
    expect(JSON.parse(stats.stdout).total).toBe(0);
    const migrate = await cli(NO_DB, ['migrate', '--json', '--database-url', db.url]);
    expect(migrate.code, migrate.stderr).toBe(0);
    // A subcommand: the parent command parses the flag; the subcommand still connects there.
    const alerts = await cli(NO_DB, ['alerts', 'ack', '1', '--database-url', db.url]);
    expect(alerts.code).toBe(1);
    expect(alerts.stderr).toMatch(/no alert with id 1/);
  });

  it('a malformed PROVIDERS_URL, --providers-url or LOG_LEVEL is exit 2 naming it', async () => {
    const db = await createTestDb();
    const fromEnv = await cli(db.url, ['worker'], { env: { PROVIDERS_URL: 'ftp://example.com' } });
    expect(fromEnv.code, fromEnv.stderr).toBe(2);
    expect(fromEnv.stderr).toMatch(/--providers-url \(PROVIDERS_URL\): must be a http:\/\/ or https:\/\/ URL/);
    const fromFlag = await cli(db.url, ['worker', '--providers-url', 'nope']);
    expect(fromFlag.code, fromFlag.stderr).toBe(2);
    expect(fromFlag.stderr).toMatch(/--providers-url \(PROVIDERS_URL\): is not a URL/);
    const level = await cli(db.url, ['stats'], { env: { LOG_LEVEL: 'loud' } });
    expect(level.code).toBe(2);
    expect(level.stderr).toMatch(/LOG_LEVEL: must be one of/);
  });
});

describe('a database that refuses the connection', () => {
  it('a URL without the password the server asks for says what to add, and the command exits at once instead of when the server gives up', async () => {
    const db = await createTestDb();
    const url = new URL(db.url);
    url.password = '';
    const started = Date.now();
    // pg leaves that connection's socket open until the server's authentication_timeout (60 s).
    const run = await cli(url.toString(), ['stats', '--json'], { timeoutMs: 30_000 });
    expect(Date.now() - started).toBeLessThan(15_000);
    const doc = expectRefusal(run, ['--json'], { exit: 1, code: 'DATABASE_UNAVAILABLE' })!;
    expect(doc.error).toMatch(/the server asks for a password and DATABASE_URL gives none for user \w+: postgres:\/\/user:password@host:port\/database, or set PGPASSWORD/);
    url.password = 'wrong';
    const wrong = await cli(url.toString(), ['stats']);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/password authentication failed .*\(check the user and password in DATABASE_URL\)/);
  });
});

describe('--json when a command fails', () => {
  it('prints the error as the one document on stdout, whatever failed: a flag, a variable, the input, the database, a missing bundle', async () => {
    const db = await createTestDb();
    const cases: Array<{ args: string[]; env?: Record<string, string>; url?: string; exit: number; code: string; says: RegExp }> = [
      { args: ['list', '--json', '--bogus'], exit: 2, code: 'USAGE', says: /unknown option '--bogus'/ },
      { args: ['list', '--json', '--limit', 'x'], exit: 2, code: 'BAD_INPUT', says: /--limit/ },
      { args: ['stats', '--json'], env: { LOG_LEVEL: 'loud' }, exit: 2, code: 'BAD_INPUT', says: /LOG_LEVEL: must be one of/ },
      { args: ['enqueue', '-', '--json'], exit: 2, code: 'BAD_INPUT', says: /not valid JSON/ },
      { args: ['inspect', '00000000-0000-4000-8000-00000000abcd', '--json'], exit: 1, code: 'NOT_FOUND', says: /no bundle with vip_bundle_id or booking_id/ },
      { args: ['stats', '--json'], url: NO_DB, exit: 1, code: 'DATABASE_UNAVAILABLE', says: /cannot reach PostgreSQL/ },
    ];
    for (const c of cases) {
      const run = await cli(c.url ?? db.url, c.args, { input: '{"customer_email": ', env: c.env });
      const doc = expectRefusal(run, c.args, { exit: c.exit, code: c.code })!;
      expect(JSON.stringify(doc), c.args.join(' ')).toMatch(c.says);
      // stderr keeps the message for a person; no stack either way.
      expect(run.stderr).toMatch(c.says);
      expectNoStack(run);
      // The same failure without --json prints nothing on stdout.
      const plain = c.args.filter((a) => a !== '--json');
      expectRefusal(await cli(c.url ?? db.url, plain, { input: '{"customer_email": ', env: c.env }), plain, { exit: c.exit, code: c.code });
    }
  });

  it('--json is read as a flag only where it is one; a long-running command never gets an error document', async () => {
    const db = await createTestDb();
    // The value of --idempotency-key, not the flag: the usage error is text only.
    const asValue = await cli(db.url, ['enqueue', '--idempotency-key', '--json', '--bogus']);
    expect(asValue.code).toBe(2);
    expect(asValue.stdout).toBe('');
    const afterDashes = await cli(db.url, ['list', '--bogus', '--', '--json']);
    expect(afterDashes.code).toBe(2);
    expect(afterDashes.stdout).toBe('');
    // `-f` takes a value in enqueue (--file) but none in inspect (--follow): there, --json after it is the flag.
    const afterSwitch = await cli(db.url, ['inspect', '-f', '--json', '00000000-0000-4000-8000-00000000abcd', '--bogus']);
    expect(expectRefusal(afterSwitch, ['--json'], { exit: 2, code: 'USAGE' })!.error).toMatch(/unknown option '--bogus'/);
    // `supervise --loop` logs to stdout like a service: a bad variable is exit 2 and no document.
    const loop = await cli(db.url, ['supervise', '--loop', '--json'], { env: { LOG_LEVEL: 'loud' } });
    expect(loop.code).toBe(2);
    expect(loop.stderr).toContain('LOG_LEVEL: must be one of');
    expect(loop.stdout).toBe('');
    // `help` of a command that does not exist.
    const help = await cli(NO_DB, ['help', 'bogus', '--json']);
    expect(expectRefusal(help, ['--json'], { exit: 2, code: 'USAGE' })!.error).toBe("no such command: see 'bundlefleet --help'");
  });

  it('reportError prints no error document after the command printed its result', () => {
    const written: string[] = [];
    const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: unknown) => (written.push(String(chunk)), true));
    const errWrite = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      requestJsonOutput(true);
      expect(reportError(new NotFound('gone'))).toBe(1);
      expect(written.map((w) => JSON.parse(w))).toEqual([{ error: 'gone', code: 'NOT_FOUND', exit_code: 1 }]);
      printJson({ ok: true });
      reportError(new Error('after the result'));
      expect(written).toHaveLength(2);
    } finally {
      requestJsonOutput(false);
      write.mockRestore();
      errWrite.mockRestore();
    }
  });

  it('a command that printed its result and then exits non-zero prints no second document', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    await db.pool.query(`INSERT INTO alerts (bundle_id, kind, message) VALUES ($1, 'stuck', 'test alert')`, [b!.vip_bundle_id]);
    const run = await cli(db.url, ['supervise', '--fail-on-alert', '--json']);
    expect(run.code).toBe(3);
    expect(jsonLines(run.stdout)).toHaveLength(1);
    expect(jsonLines(run.stdout)[0]).toMatchObject({ ran: true });
  });
});

describe('usage errors and help', () => {
  it('an unknown flag prints the error and where to look, not the whole help page (exit 2)', async () => {
    for (const [args, where] of [[['list', '--bogus'], 'bundlefleet list --help'], [['alerts', 'ack', '--bogus'], 'bundlefleet alerts ack --help'], [['--bogus'], 'bundlefleet --help']] as const) {
      const run = await cli(NO_DB, [...args]);
      expect(run.code).toBe(2);
      expect(run.stderr).toContain("unknown option '--bogus'");
      expect(run.stderr).toContain(`see '${where}'`);
      expect(run.stderr).not.toMatch(/Usage:|Options:/);
      expect(run.stderr.trim().split('\n').length).toBeLessThanOrEqual(3);
      expect(run.stdout).toBe('');
    }
  });

  it('every command has examples; the top-level help lists every exit code', async () => {
    const top = await cli(NO_DB, ['--help']);
    expect(top.code).toBe(0);
    for (const code of ['0', '1', '2', '3']) expect(top.stdout).toMatch(new RegExp(`^\\s+${code}\\s+\\S`, 'm'));
    expect(top.stdout).toMatch(/3\s+supervise --fail-on-alert/);
    expect(top.stdout).toMatch(/\nExamples:\n\s+\$ bundlefleet /);
    const commands = await allCommands();
    expect(commands.length).toBeGreaterThan(15);
    const helps = await Promise.all(commands.map((path) => cli(NO_DB, [...path, '--help'])));
    for (const [i, path] of commands.entries()) {
      const help = helps[i]!;
      expect(help.code, path.join(' ')).toBe(0);
      expect(help.stdout, `${path.join(' ')} --help`).toMatch(/\nExamples:\n\s+\$ .*bundlefleet /);
      // One section, however many places added examples (dev once had two).
      expect(help.stdout.match(/^Examples:$/gm)?.length, `${path.join(' ')} --help: Examples sections`).toBe(1);
    }
  });

  it("serve --help states the token rule the server applies: every POST route, and only those, needs the token", async () => {
    const table = routes({ pool: {} as never, metrics: {} as never, isDraining: () => false, ping: async () => undefined });
    const posts = table.filter((r) => r.method === 'POST');
    expect(posts.length).toBeGreaterThanOrEqual(5);
    expect(posts.every((r) => r.write), 'a POST route without write: true').toBe(true);
    expect(table.filter((r) => r.write).every((r) => r.method === 'POST'), 'a write route that is not a POST').toBe(true);
    const help = (await cli(NO_DB, ['serve', '--help'])).stdout.replace(/\s+/g, ' ');
    expect(help).toContain('Every POST');
    // The help names each of them; each named one is a POST route of the table.
    const named = { '/book-vip-bundle': ['/book-vip-bundle'], '/bundles/:id/retry|cancel|ack': ['/bundles/x/retry', '/bundles/x/cancel', '/bundles/x/ack'], '/bundles/:id/signals/:name': ['/bundles/x/signals/y'], '/api/alerts/:id/ack': ['/api/alerts/1/ack'] };
    for (const [text, paths] of Object.entries(named)) {
      expect(help, `serve --help does not name ${text}`).toContain(`POST ${text}`);
      for (const path of paths) expect(posts.some((r) => r.path.test(path)), `${path} is not a POST route`).toBe(true);
    }
    expect(posts.length).toBe(Object.values(named).flat().length);
  });

  it('--session-database-url is offered only where a session connection is used, not by the db commands', async () => {
    const offers = async (path: string[]) => (await cli(NO_DB, [...path, '--help'])).stdout.includes('--session-database-url');
    for (const path of [['db', 'status'], ['db', 'url'], ['db', 'stop']]) expect(await offers(path), path.join(' ')).toBe(false);
    for (const path of [['worker'], ['dev'], ['stats'], ['migrate']]) expect(await offers(path), path.join(' ')).toBe(true);
    // Given anyway, it is an unknown option (exit 2), not silently ignored.
    expect((await cli(NO_DB, ['db', 'url', '--session-database-url', 'postgres://x@h/db'])).code).toBe(2);
  });

  it("the README's configuration table lists every flag with its environment variable", async () => {
    const readme = await readFile(fileURLToPath(new URL('../README.md', import.meta.url)), 'utf8');
    const table = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('\n## ', readme.indexOf('## Configuration') + 5));
    const rows = table.split('\n').filter((l) => l.startsWith('| `'));
    const pairs = new Map<string, string>();
    const commands = await allCommands();
    const helps = await Promise.all(commands.map((path) => cli(NO_DB, [...path, '--help'])));
    for (const [i, path] of commands.entries()) {
      for (const [flag, env] of flagEnvPairs(helps[i]!.stdout)) pairs.set(`${flag} ${env}`, path.join(' '));
    }
    expect(pairs.size).toBeGreaterThan(20);
    for (const key of pairs.keys()) {
      const [flag, env] = key.split(' ');
      const row = rows.find((r) => r.includes(`\`${env}\``));
      expect(row, `README configuration table has no row for ${env} (${flag}, used by ${pairs.get(key)})`).toBeDefined();
      expect(row, `README row for ${env} does not name ${flag}`).toContain(`\`${flag}\``);
    }
  });
});

/** Every command path, from the top-level help and each group's help. */
async function allCommands(): Promise<string[][]> {
  const names = (text: string) =>
    text.slice(text.indexOf('\nCommands:\n')).split('\n').slice(2).map((l) => /^ {2}([a-z][a-z-]*)/.exec(l)?.[1]).filter((n): n is string => !!n && n !== 'help');
  const out: string[][] = [];
  const top = names((await cli(NO_DB, ['--help'])).stdout);
  const helps = await Promise.all(top.map((name) => cli(NO_DB, [name, '--help'])));
  for (const [i, name] of top.entries()) {
    out.push([name]);
    const help = helps[i]!.stdout;
    if (help.includes('\nCommands:\n')) for (const sub of names(help)) out.push([name, sub]);
  }
  return out;
}

/** (flag, variable) for each option of a help page whose description ends with `env: X)`; descriptions may wrap. */
function flagEnvPairs(help: string): Array<[string, string]> {
  const options = help.slice(help.indexOf('\nOptions:\n'), help.indexOf('\n\n', help.indexOf('\nOptions:\n') + 10));
  const entries: string[] = [];
  for (const line of options.split('\n').slice(2)) {
    if (/^ {2}-/.test(line)) entries.push(line);
    else if (entries.length) entries[entries.length - 1] += ` ${line.trim()}`;
  }
  return entries.flatMap((e) => {
    const flag = /--[a-z][a-z-]*/.exec(e)?.[0];
    const env = /env: ([A-Z_]+)\)/.exec(e)?.[1];
    return flag && env ? [[flag, env] as [string, string]] : [];
  });
}
