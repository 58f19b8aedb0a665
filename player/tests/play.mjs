// Checks in headless Chromium that a page really plays video: that the <video>'s
// currentTime advances by at least MIN_ADVANCE seconds of playback.
//
// usage: node tests/play.mjs URL [DEADLINE_S=60] [MIN_ADVANCE_S=5]
// env:   PLAY_SCREENSHOT=path.png  also saves a screenshot once the video has played
//        CHROMIUM=/path/to/chromium (default /usr/bin/chromium)
//        PLAY_WITHOUT_HLSJS=1  answers 404 for /player/hls.min.js, to check the page's
//                              fallback to the browser's native HLS
//
// Prints one line of JSON, {"ok":bool,"advanced_s":N,"error":string|null,
// "engine":string|null,"console_errors":[...]} (engine: the video's data-engine, which
// the meshtv page sets to "hls.js" or "native"), and exits 0 only if ok.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, deadlineArg = '60', advanceArg = '5'] = process.argv.slice(2);
const deadlineS = Number(deadlineArg);
const minAdvanceS = Number(advanceArg);
const screenshot = process.env.PLAY_SCREENSHOT || null;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const withoutHlsJs = process.env.PLAY_WITHOUT_HLSJS === '1';
const POLL_MS = 250;
const CONSOLE_ERRORS_KEPT = 20;

let engine = null;

function report(ok, advancedS, error, consoleErrors) {
  const line = { ok, advanced_s: Math.round(advancedS * 1000) / 1000, error, engine, console_errors: consoleErrors };
  process.stdout.write(JSON.stringify(line) + '\n');
  process.exitCode = ok ? 0 : 1;
}

if (!url || !Number.isFinite(deadlineS) || deadlineS <= 0 || !Number.isFinite(minAdvanceS) || minAdvanceS < 0) {
  report(false, 0, 'usage: node tests/play.mjs URL [DEADLINE_S] [MIN_ADVANCE_S]', []);
  process.exit(2);
}

const consoleErrors = [];
function noteError(text) {
  if (consoleErrors.length < CONSOLE_ERRORS_KEPT) consoleErrors.push(String(text).slice(0, 500));
}

const profile = mkdtempSync(join(tmpdir(), 'meshtv-play-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1100, height: 860 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
} catch (err) {
  rmSync(profile, { recursive: true, force: true });
  report(false, 0, `cannot launch ${executablePath}: ${err.message.split('\n')[0]}`, []);
  process.exit(1);
}

let advanced = 0;
let error = null;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (msg) => {
    if (msg.type() === 'error') noteError(msg.text());
  });
  page.on('pageerror', (err) => noteError(`pageerror: ${err.message}`));
  if (withoutHlsJs) {
    await context.route('**/player/hls.min.js', (route) => route.fulfill({ status: 404, body: '' }));
  }

  const deadline = Date.now() + deadlineS * 1000;
  await page.goto(url, { waitUntil: 'load', timeout: deadlineS * 1000 });

  // currentTime when it first went above 0; null until then.
  let firstTime = null;
  let last = null;
  while (Date.now() < deadline) {
    last = await page.evaluate(() => {
      const v = document.querySelector('video');
      if (!v) return { missing: true };
      return {
        t: v.currentTime,
        engine: v.dataset.engine || null,
        err: v.error ? { code: v.error.code, message: v.error.message } : null,
      };
    });
    if (last.missing) {
      error = 'page has no <video> element';
      break;
    }
    engine = last.engine;
    if (last.t > 0 && firstTime === null) firstTime = last.t;
    if (firstTime !== null) advanced = Math.max(advanced, last.t - firstTime);
    if (advanced >= minAdvanceS) break;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }

  if (advanced >= minAdvanceS) {
    if (screenshot) await page.screenshot({ path: screenshot });
  } else if (error === null) {
    const parts = [
      firstTime === null
        ? `video never started within ${deadlineS} s`
        : `video advanced only ${advanced.toFixed(2)} s of ${minAdvanceS} s within ${deadlineS} s`,
    ];
    if (last && last.err) parts.push(`video error ${last.err.code}: ${last.err.message}`);
    if (consoleErrors.length > 0) parts.push(`last console error: ${consoleErrors[consoleErrors.length - 1]}`);
    error = parts.join('; ');
  }
} catch (err) {
  error = `${err.name}: ${err.message.split('\n')[0]}`;
} finally {
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}

report(error === null && advanced >= minAdvanceS, advanced, error, consoleErrors);
