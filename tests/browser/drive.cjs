// tests/browser.rs's driver: serves page.html and mqtt.js's browser bundle
// from a small HTTP server on 127.0.0.1, opens the page in headless
// Chromium (Debian's, through playwright-core) and reports on stdout, one
// line each:
//   SUBSCRIBED          the page's client is connected and subscribed
//   DOM <file>          the page's DOM after the first message, written to <file>
//   SCREENSHOT <file>   a PNG of the page then
// and exits 0; on any failure or after its time limit, it says why on
// stderr and exits 1. It publishes nothing: the test does, with
// mosquitto_pub, once it has read SUBSCRIBED.
//
//   node drive.cjs NODE_DIR WS_URL TOPIC OUT_DIR
"use strict";
const fs = require("fs");
const http = require("http");
const path = require("path");
const { createRequire } = require("module");

const [nodeDir, wsUrl, topic, outDir] = process.argv.slice(2);
const requireDep = createRequire(path.join(nodeDir, "package.json"));
const { chromium } = requireDep("playwright-core");
const bundle = path.join(nodeDir, "node_modules/mqtt/dist/mqtt.min.js");
const chromiumPath = process.env.MIDGE_CHROMIUM || "/usr/bin/chromium";
const LIMIT_MS = 40000;

function fail(why) {
  console.error("FAIL " + why);
  process.exit(1);
}
setTimeout(() => fail(`no result within ${LIMIT_MS} ms`), LIMIT_MS).unref();

const files = {
  "/": ["text/html", path.join(__dirname, "page.html")],
  "/mqtt.min.js": ["text/javascript", bundle],
};

async function main() {
  const server = http.createServer((req, res) => {
    const f = files[new URL(req.url, "http://x").pathname];
    if (!f) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { "content-type": f[0] });
    fs.createReadStream(f[1]).pipe(res);
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const pageUrl = `http://127.0.0.1:${server.address().port}/?ws=${encodeURIComponent(wsUrl)}&topic=${encodeURIComponent(topic)}`;

  // A fresh profile each run (launchPersistentContext passes it as
  // --user-data-dir), and nothing that talks to anything but loopback.
  const profile = fs.mkdtempSync(path.join(outDir, "chromium-profile-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 900, height: 500 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.on("console", (m) => console.error("page console: " + m.text()));
    await page.goto(pageUrl);
    const state = page.locator("#state");
    const reached = async (want) => {
      await page.waitForFunction(
        (w) => ["error", w].includes(document.getElementById("state").dataset.state), want, { timeout: 20000 });
      const got = await state.getAttribute("data-state");
      if (got !== want) fail(`page state ${JSON.stringify(await state.textContent())}, waiting for ${want}`);
    };
    await reached("subscribed");
    console.log("SUBSCRIBED");
    await reached("received");
    const dom = path.join(outDir, "page.html");
    fs.writeFileSync(dom, await page.content());
    console.log("DOM " + dom);
    const png = path.join(outDir, "page.png");
    await page.screenshot({ path: png });
    console.log("SCREENSHOT " + png);
  } finally {
    await context.close();
    server.close();
  }
}

main().then(() => process.exit(0), (e) => fail(e.stack || String(e)));
