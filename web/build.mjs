// Bundles src/ into dist/: index.html, one JS module and one stylesheet (content-hashed names).
// Usage: node build.mjs [--watch]
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(root, 'dist');
const watch = process.argv.includes('--watch');

const options = {
  absWorkingDir: root,
  entryPoints: { app: 'src/main.js', style: 'src/style.css' },
  outdir: dist,
  entryNames: '[name]-[hash]',
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022', 'chrome109', 'firefox115', 'safari16'],
  minify: !watch,
  sourcemap: true,
  legalComments: 'linked',
  metafile: true,
  logLevel: 'info',
  plugins: [
    {
      name: 'index-html',
      setup(build) {
        build.onEnd(async (result) => {
          if (result.errors.length) return;
          const outputs = Object.entries(result.metafile.outputs);
          const find = (entry) => {
            const hit = outputs.find(([, meta]) => meta.entryPoint === entry);
            return path.basename(hit[0]);
          };
          const html = (await readFile(path.join(root, 'src/index.html'), 'utf8'))
            .replace('%APP_JS%', find('src/main.js'))
            .replace('%STYLE_CSS%', find('src/style.css'));
          await writeFile(path.join(dist, 'index.html'), html);
        });
      },
    },
  ],
};

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
if (watch) {
  const context = await esbuild.context(options);
  await context.watch();
} else {
  await esbuild.build(options);
}
