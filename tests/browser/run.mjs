// Drives Debian's Chromium (headless, closed-network flags, a fresh profile) with
// playwright-core for tests/browser.rs, and prints what a listener would notice as one JSON
// object. Assertions are made by the Rust test; this only acts and observes.
//
//   node tests/browser/run.mjs SCENARIO EDGE_URL OUT_DIR [TOKEN]
//
// Scenarios:
//   play      the player at EDGE/player/ on a two-track playlist, the link throttled until the
//             first segment is in, then free; seeks to the last segment; plays into track two
//             with the link throttled again.
//             Writes each appended segment to OUT_DIR/appended-N.bin and a screenshot.
//   tampered  the same page, with the manifest altered in flight (one byte of its title).
//   token     the player given TOKEN in its URL, then the player without it.
//   protected the player given TOKEN on the protected track "tides" (past its second segment;
//             each appended segment written to OUT_DIR/appended-N.bin), then without a token;
//             then hls.js from another origin on its master playlist with ?token=TOKEN.
//   hls       hls.js (from node_modules) on a page of another origin playing EDGE's master
//             playlist: the standard-player and CORS check.
//   view      the demo's network view at EDGE_URL (the URL `chorus demo` prints), until it
//             shows bytes from peers; a screenshot.

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const [scenario, edge, outDir, token] = process.argv.slice(2);
if (!scenario || !edge || !outDir) {
  console.error("usage: node run.mjs SCENARIO EDGE_URL OUT_DIR [TOKEN]");
  process.exit(2);
}
const here = path.dirname(fileURLToPath(import.meta.url));
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const profile = fs.mkdtempSync(path.join(outDir, "profile-"));
const deadline = (s) => Date.now() + s * 1000;

const browser = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
  ],
  viewport: { width: 900, height: 760 },
});
const page = browser.pages()[0] || (await browser.newPage());
const consoleErrors = [];
page.on("console", (m) => {
  if (m.type() === "error") consoleErrors.push(m.text());
});
page.on("pageerror", (e) => consoleErrors.push(String(e)));

const player = () => page.evaluate(() => window.chorusPlayer && window.chorusPlayer.state);
const currentTime = () => page.evaluate(() => document.querySelector("audio, video").currentTime);

async function until(what, cond, seconds) {
  const end = deadline(seconds);
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(await player().catch(() => null))}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Writes each segment the player appended (kept with debug=1) to OUT_DIR/appended-N.bin. */
async function saveAppended() {
  const bytes = await page.evaluate(() =>
    window.chorusPlayer.appendedBytes.map((b) => {
      let s = "";
      for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
      return btoa(s);
    }),
  );
  bytes.forEach((b64, i) => fs.writeFileSync(path.join(outDir, `appended-${i}.bin`), Buffer.from(b64, "base64")));
}

/** hls.js (from node_modules) on a page of its own origin (another port), as a web app would
 * be, playing `src`: every request to the edge is cross-origin, so it works only if the edge
 * answers CORS. What it reached: the audio's time, hls.js's fatal errors. */
async function hlsPage(src) {
  const hlsJs = fs.readFileSync(path.join(here, "node_modules/hls.js/dist/hls.min.js"));
  const site = http.createServer((req, res) => {
    if (req.url === "/hls.js") {
      res.writeHead(200, { "content-type": "text/javascript" });
      return res.end(hlsJs);
    }
    res.writeHead(200, { "content-type": "text/html" });
    res.end(`<!doctype html><audio id="a" controls></audio><script src="/hls.js"></script><script>
      window.hlsErrors = [];
      const hls = new Hls();
      hls.on(Hls.Events.ERROR, (e, d) => { if (d.fatal) window.hlsErrors.push(d.type + ": " + d.details); });
      hls.loadSource(${JSON.stringify(src)});
      hls.attachMedia(document.getElementById("a"));
      hls.on(Hls.Events.MANIFEST_PARSED, () => document.getElementById("a").play());
    </script>`);
  });
  await new Promise((r) => site.listen(0, "127.0.0.1", r));
  const pageOrigin = `http://localhost:${site.address().port}/`;
  try {
    await page.goto(pageOrigin);
    await until("hls.js past the first segment", async () => (await currentTime()) > 6.5 || (await page.evaluate(() => window.hlsErrors.length)), 60);
    return { pageOrigin, currentTime: await currentTime(), hlsErrors: await page.evaluate(() => window.hlsErrors) };
  } finally {
    site.close();
  }
}

const result = { scenario, consoleErrors };
try {
  if (scenario === "play") {
    const cdp = await browser.newCDPSession(page);
    await cdp.send("Network.enable");
    const throttle = (kbps) =>
      cdp.send("Network.emulateNetworkConditions", {
        offline: false,
        latency: kbps ? 20 : 0,
        downloadThroughput: kbps ? (kbps * 1000) / 8 : -1,
        uploadThroughput: -1,
      });
    await throttle(64);
    await page.goto(`${edge}/player/?tracks=chorus-tides,chorus-sunrise&buffer=7&debug=1`);
    await until("the first segment", async () => (await player())?.appended.length >= 1, 60);
    result.firstRendition = (await player()).appended[0].rendition;
    await throttle(0);
    await until("a switch up", async () => (await player())?.appended.some((a) => a.rendition !== result.firstRendition), 60);
    await until("12 s of the first track", async () => (await currentTime()) > 12.5, 60);
    result.timeBeforeSeek = await currentTime();
    await page.screenshot({ path: path.join(outDir, "player.png") });
    // Seek to the last segment (the player's own button), and on into the next track over a
    // slow link again: its first segment comes at the bitrate the fast link allowed, and
    // after that slow download the bitrate goes down.
    await page.locator("#seeks button").last().click();
    await throttle(64);
    await until("the second track", async () => (await player())?.track === "chorus-sunrise", 60);
    await until("the second track playing", async () => {
      const s = await player();
      return s.tracksDone === 1 && s.appended.some((a) => a.track === "chorus-sunrise") && (await currentTime()) > 1;
    }, 60);
    await until("a switch down", async () => {
      const s = await player();
      return s.appended.some((a) => a.track === "chorus-sunrise" && a.rendition === result.firstRendition);
    }, 60);
    await saveAppended();
    result.state = await player();
    result.currentTime = await currentTime();
    result.mediaError = await page.evaluate(() => (document.querySelector("audio").error || {}).code || null);
  } else if (scenario === "tampered") {
    await page.route("**/v1/tracks/*/manifest", async (route) => {
      const r = await route.fetch();
      const text = (await r.text()).replace('"title":"Tides"', '"title":"Tidez"');
      await route.fulfill({ response: r, body: text });
    });
    await page.goto(`${edge}/player/?track=chorus-tides&debug=1`);
    await until("an error", async () => (await player())?.error, 30);
    await new Promise((r) => setTimeout(r, 1500)); // anything it would still do, it does now
    result.state = await player();
    result.currentTime = await currentTime();
    result.errorShown = await page.locator("#error").textContent();
    await page.screenshot({ path: path.join(outDir, "tampered.png") });
  } else if (scenario === "token") {
    await page.goto(`${edge}/player/?track=chorus-tides&token=${encodeURIComponent(token)}`);
    await until("playing with a token", async () => (await currentTime()) > 1, 60);
    result.withToken = await player();
    await page.goto(`${edge}/player/?track=chorus-tides`);
    await until("an error without one", async () => (await player())?.error, 30);
    result.withoutToken = await player();
  } else if (scenario === "protected") {
    await page.goto(`${edge}/player/?track=tides&token=${encodeURIComponent(token)}&debug=1`);
    await until("the protected track past its second segment", async () => (await currentTime()) > 7, 60);
    result.withToken = await player();
    result.currentTime = await currentTime();
    await saveAppended();
    await page.goto(`${edge}/player/?track=tides`);
    await until("an error without a token", async () => (await player())?.error, 30);
    result.withoutToken = await player();
    result.hls = await hlsPage(`${edge}/v1/tracks/tides/hls/master.m3u8?token=${encodeURIComponent(token)}`);
  } else if (scenario === "hls") {
    Object.assign(result, await hlsPage(`${edge}/v1/tracks/chorus-tides/hls/master.m3u8`));
  } else if (scenario === "view") {
    // EDGE_URL is the demo's network view here.
    await page.goto(edge);
    const seen = () =>
      page.evaluate(() => ({
        frames: window.chorusView.frames,
        nodes: [...document.querySelectorAll("#graph g.node")].map((g) => ({ id: g.dataset.id, kind: g.dataset.kind })),
        peerBytes: [...document.querySelectorAll("#graph path.link[data-kind=peer]")].map((p) => Number(p.dataset.bytes)),
        edgeBytes: [...document.querySelectorAll("#graph path.link[data-kind=edge]")].map((p) => Number(p.dataset.bytes)),
        layers: [...document.querySelectorAll("#stack polygon.layer")].map((p) => p.dataset.source),
        hitBars: document.querySelectorAll("#hits rect.hit").length,
        status: document.getElementById("status").textContent,
      }));
    await until("peer bytes in the view", async () => {
      const v = await seen();
      return v.frames >= 3 && v.peerBytes.some((b) => b > 0) && v.layers.length === 3;
    }, 120);
    await page.screenshot({ path: path.join(outDir, "network.png"), fullPage: true });
    result.view = await seen();
    result.snapshot = await page.evaluate(() => window.chorusView.snapshot);
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
} catch (e) {
  result.failure = String(e && e.stack ? e.stack : e);
} finally {
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
