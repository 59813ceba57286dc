/**
 * A Chromium for the browser test that needs nothing but `npm ci`: Debian's `chromium` when the
 * machine has one, else the headless build shipped inside the `@sparticuz/chromium` npm package
 * (brotli-compressed in its tarball: nothing is downloaded).
 *
 * We unpack the package's files ourselves instead of calling its executablePath(): that one
 * writes to a fixed /tmp/chromium that several test runs would race on, and unpacks the NSS and
 * expat libraries the binary links against only on Amazon Linux. A slim Debian (node:20-slim)
 * has neither, so we always use the packaged libraries (LD_LIBRARY_PATH) and fonts (fontconfig).
 */
import { spawnSync } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { brotliDecompressSync, createBrotliDecompress } from 'node:zlib';
import { chromium, type Browser } from 'playwright-core';

const SYSTEM_CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
// Containers often have a small /dev/shm.
const PACKAGED_ARGS = [...ARGS, '--disable-dev-shm-usage'];

export interface ChromiumBuild {
  kind: 'system' | 'packaged';
  executablePath: string;
  args: string[];
  env?: Record<string, string>;
}

async function packageDir(): Promise<{ dir: string; version: string }> {
  const require = createRequire(import.meta.url);
  // The package's exports do not include package.json: walk up from its entry point.
  let dir = dirname(require.resolve('@sparticuz/chromium'));
  while (!existsSync(join(dir, 'package.json')) || !existsSync(join(dir, 'bin'))) dir = dirname(dir);
  const { version } = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as { version: string };
  return { dir, version };
}

/** The archives are small (a few MB): decompressed in memory, then handed to tar whole (tar may exit before reading trailing padding). */
async function untarBrotli(archive: string, into: string): Promise<void> {
  const tarball = brotliDecompressSync(await readFile(archive));
  const result = spawnSync('tar', ['-x', '--no-same-owner', '-C', into], { input: tarball, stdio: ['pipe', 'inherit', 'pipe'] });
  if (result.error) throw result.error;
  if (result.status !== 0) throw new Error(`tar exited with ${result.status} unpacking ${archive}: ${result.stderr.toString().trim()}`);
}

/** Unpacks the packaged build once per version into the temp dir (atomically: several runs may race). */
export async function unpackPackagedChromium(): Promise<string> {
  const { dir, version } = await packageDir();
  const target = join(tmpdir(), `bundlefleet-chromium-${version}-${userInfo().uid}`);
  if (existsSync(join(target, 'chromium'))) return target;
  const partial = await mkdtemp(`${target}.partial-`);
  try {
    await pipeline(createReadStream(join(dir, 'bin', 'chromium.br')), createBrotliDecompress(), createWriteStream(join(partial, 'chromium'), { mode: 0o755 }));
    for (const archive of ['al2023.tar.br', 'fonts.tar.br', 'swiftshader.tar.br']) await untarBrotli(join(dir, 'bin', archive), partial);
    // Our fonts first, then whatever the machine has.
    await writeFile(
      join(partial, 'fonts.conf'),
      `<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n  <dir>${join(target, 'fonts')}</dir>\n  <cachedir>${join(target, 'fonts-cache')}</cachedir>\n  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n</fontconfig>\n`,
    );
    await rename(partial, target);
  } catch (err) {
    await rm(partial, { recursive: true, force: true });
    // Another run finished first: use its copy.
    if (existsSync(join(target, 'chromium'))) return target;
    throw err;
  }
  return target;
}

export async function packagedChromium(): Promise<ChromiumBuild> {
  const dir = await unpackPackagedChromium();
  const libs = [join(dir, 'lib'), dir, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':');
  return {
    kind: 'packaged',
    executablePath: join(dir, 'chromium'),
    args: PACKAGED_ARGS,
    env: { LD_LIBRARY_PATH: libs, FONTCONFIG_FILE: join(dir, 'fonts.conf') },
  };
}

/**
 * Debian's chromium when installed, else the packaged one. BUNDLEFLEET_TEST_CHROMIUM=packaged
 * forces the packaged build (to check the fresh-machine path where chromium is installed).
 */
export async function findChromium(env: NodeJS.ProcessEnv = process.env): Promise<ChromiumBuild> {
  const choice = env.BUNDLEFLEET_TEST_CHROMIUM?.trim();
  if (choice && choice !== 'packaged' && choice !== 'system') throw new Error(`BUNDLEFLEET_TEST_CHROMIUM: must be "packaged" or "system", not ${JSON.stringify(choice)}`);
  if (choice === 'system' || (choice !== 'packaged' && existsSync(SYSTEM_CHROMIUM))) return { kind: 'system', executablePath: SYSTEM_CHROMIUM, args: ARGS };
  return packagedChromium();
}

export async function launchChromium(build: ChromiumBuild): Promise<Browser> {
  const env = build.env ? { ...(process.env as Record<string, string>), ...build.env } : undefined;
  return chromium.launch({ executablePath: build.executablePath, args: build.args, env, timeout: 30_000 });
}
