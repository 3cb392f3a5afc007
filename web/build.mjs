// Bundles src/ into ../agents/web/static/ (committed, so the product serves the client
// without Node.js). `node build.mjs --check` rebuilds into a temporary directory and fails
// if the committed bundle differs, i.e. if someone changed src/ without rebuilding.
import { build } from 'esbuild';
import { copyFile, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const target = join(here, '..', 'agents', 'web', 'static');
const check = process.argv.includes('--check');
const out = check ? await mkdtemp(join(tmpdir(), 'web-build-')) : target;

// the scripts: app.js, and Google's SDK in a bundle of its own (direct.js, the
// direct-to-Gemini mode) that app.js imports only when that mode is chosen
const script = (name, options = {}) => build({
  entryPoints: [join(here, 'src', name)],
  outfile: join(out, name),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  minify: true,
  legalComments: 'eof',
  charset: 'utf8',
  logLevel: 'warning',
  ...options,
});
await script('app.js', { define: { 'process.env.NODE_ENV': '"production"' } });
await script('direct.js');
await build({
  entryPoints: [join(here, 'src', 'app.css')],
  outfile: join(out, 'app.css'),
  bundle: true,
  minify: true,
  logLevel: 'warning',
});
for (const file of ['index.html', 'favicon.svg', 'pcm-recorder.js']) await copyFile(join(here, 'src', file), join(out, file));

if (check) {
  const stale = [];
  for (const name of await readdir(out)) {
    const [a, b] = await Promise.all([
      readFile(join(out, name)),
      readFile(join(target, name)).catch(() => null),
    ]);
    if (!b || !a.equals(b)) stale.push(name);
  }
  // a file the build no longer makes would still be served
  const built = new Set(await readdir(out));
  for (const name of await readdir(target)) if (!built.has(name)) stale.push(`${name} (not built)`);
  await rm(out, { recursive: true, force: true });
  if (stale.length) {
    console.error(`agents/web/static is out of date (${stale.join(', ')}): run npm ci && npm run build in web/`);
    process.exit(1);
  }
  console.log('agents/web/static matches web/src');
} else {
  console.log(`built ${target}`);
}
