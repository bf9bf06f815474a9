// A person at the live view: a second, headless Chromium (Playwright) opens embed URLs and
// clicks, types, scrolls and looks at them. Driven by tests/live.rs over stdin/stdout: one
// JSON command per line in, one JSON answer per line out.
//   {cmd:"open", name, url}                 -> window.__pv once frames arrive
//   {cmd:"state", name}                     -> window.__pv
//   {cmd:"click", name, x, y, button?, clickCount?}  (x, y in the remote page's CSS px)
//   {cmd:"type", name, text} / {cmd:"press", name, key}
//   {cmd:"wheel", name, x, y, dy}
//   {cmd:"pixel", name, x, y}               -> [r, g, b] of a screenshot of the viewer there
//   {cmd:"sample", name, points: [[x, y], ...]} -> [[r, g, b], ...] of the picture (remote px)
//   {cmd:"find", name, rgb, tol, rect: [x0, y0, x1, y1]} -> {count, x, y, maxX}: pixels of the
//                                           picture within `tol` of `rgb` there, their centre
//                                           and their rightmost column
//   {cmd:"clickChoose", name, x, y, path}   -> clicks, and picks `path` in the file chooser
//                                           that the click opens in the viewer
//   {cmd:"save", name, path}                -> writes the picture as a PNG (for failures)
//   {cmd:"viewport", name, width, height}   -> the person's window changes size
//   {cmd:"host", name, url, until}          -> opens an app's page (not the embed page) and
//                                           waits until `until` (a page expression) holds
//   {cmd:"evaluate", name, expr}            -> the value of `expr` on that page (no CSP there)
//   {cmd:"clickAt", name, x, y}             -> a click at the page's own coordinates
//   {cmd:"moveAt", name, x, y}              -> the pointer moves there
//   {cmd:"typeText", name, text}            -> types on the page's keyboard
//   {cmd:"waitFor", name, expr, timeout?}   -> true once `expr` (on window.__pv) holds
//   {cmd:"page", name}                      -> {url, html}
//   {cmd:"close", name} / {cmd:"quit"}
import { chromium } from "playwright-core";
import readline from "node:readline";
import zlib from "node:zlib";

const browser = await chromium.launch({
  executablePath: process.env.PV_VIEWER_CHROMIUM || "chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const pages = new Map();

// Maps a point of the remote page to the viewer's screen (the canvas is scaled to fit).
async function toScreen(page, x, y) {
  return page.evaluate(([x, y]) => {
    const c = document.getElementById("view").getBoundingClientRect();
    const m = window.__pv.meta;
    return { x: c.left + (x * c.width) / m.width, y: c.top + (y * c.height) / m.height };
  }, [x, y]);
}

// The RGB of the top-left pixel of a PNG (8-bit RGB or RGBA, as Chromium writes them).
function firstPixel(png) {
  let off = 8, idat = [], colorType = 0;
  while (off < png.length) {
    const len = png.readUInt32BE(off), type = png.toString("ascii", off + 4, off + 8);
    const data = png.subarray(off + 8, off + 8 + len);
    if (type === "IHDR") colorType = data[9];
    if (type === "IDAT") idat.push(data);
    off += 12 + len;
  }
  const raw = zlib.inflateSync(Buffer.concat(idat));
  // Every PNG filter leaves the first pixel of the first row as it is.
  if (raw[0] > 4 || (colorType !== 2 && colorType !== 6)) throw new Error("unexpected PNG " + colorType);
  return [raw[1], raw[2], raw[3]];
}

async function run(c) {
  const page = pages.get(c.name);
  switch (c.cmd) {
    case "open": {
      const p = await browser.newPage({ viewport: { width: c.width || 1000, height: c.height || 760 } });
      pages.set(c.name, p);
      await p.goto(c.url);
      await p.waitForFunction(() => window.__pv && window.__pv.state === "open" && window.__pv.frames > 0, null, { timeout: 20000 });
      return p.evaluate(() => window.__pv);
    }
    case "state": return page.evaluate(() => window.__pv);
    case "host": {
      const p = await browser.newPage({ viewport: { width: c.width || 1000, height: c.height || 700 } });
      pages.set(c.name, p);
      const said = [];
      p.on("console", (m) => said.push(m.text()));
      p.on("pageerror", (e) => said.push(String(e)));
      await p.goto(c.url);
      // Polled with evaluate: waitForFunction compiles the string in the page, which a
      // strict CSP (no 'unsafe-eval') refuses.
      for (const end = Date.now() + 20000; ; await new Promise((r) => setTimeout(r, 100))) {
        if (await p.evaluate(c.until).catch(() => false)) return true;
        if (Date.now() > end) throw new Error("host: not so within 20 s: " + c.until + "; the page said: " + said.slice(-10).join(" | "));
      }
    }
    case "evaluate": return page.evaluate(c.expr);
    case "clickAt": await page.mouse.click(c.x, c.y); return true;
    case "moveAt": await page.mouse.move(c.x, c.y, { steps: 3 }); return true;
    case "typeText": await page.keyboard.type(c.text, { delay: 30 }); return true;
    case "viewport": await page.setViewportSize({ width: c.width, height: c.height }); return true;
    case "click": {
      const s = await toScreen(page, c.x, c.y);
      await page.mouse.click(s.x, s.y, { button: c.button || "left", clickCount: c.clickCount || 1 });
      return true;
    }
    case "type": await page.keyboard.type(c.text, { delay: 20 }); return true;
    case "press": await page.keyboard.press(c.key); return true;
    case "wheel": {
      const s = await toScreen(page, c.x, c.y);
      await page.mouse.move(s.x, s.y);
      await page.mouse.wheel(0, c.dy);
      return true;
    }
    case "pixel": {
      const s = await toScreen(page, c.x, c.y);
      const png = await page.screenshot({ clip: { x: Math.round(s.x), y: Math.round(s.y), width: 1, height: 1 } });
      return firstPixel(png);
    }
    case "sample": return page.evaluate((points) => {
      const ctx = document.getElementById("view").getContext("2d");
      return points.map(([x, y]) => Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3)));
    }, c.points);
    case "find": return page.evaluate(([rgb, tol, [x0, y0, x1, y1]]) => {
      const d = document.getElementById("view").getContext("2d").getImageData(x0, y0, x1 - x0, y1 - y0).data;
      let count = 0, sx = 0, sy = 0, maxX = -1;
      for (let i = 0; i < d.length; i += 4) {
        if (Math.abs(d[i] - rgb[0]) <= tol && Math.abs(d[i + 1] - rgb[1]) <= tol && Math.abs(d[i + 2] - rgb[2]) <= tol) {
          const p = i / 4;
          count++; sx += x0 + (p % (x1 - x0)); sy += y0 + Math.floor(p / (x1 - x0));
          maxX = Math.max(maxX, x0 + (p % (x1 - x0)));
        }
      }
      return { count, x: count ? sx / count : -1, y: count ? sy / count : -1, maxX };
    }, [c.rgb, c.tol, c.rect]);
    case "clickChoose": {
      const s = await toScreen(page, c.x, c.y);
      const [fc] = await Promise.all([
        page.waitForEvent("filechooser", { timeout: 15000 }),
        page.mouse.click(s.x, s.y),
      ]);
      await fc.setFiles(c.path);
      return true;
    }
    case "save": {
      const url = await page.evaluate(() => document.getElementById("view").toDataURL("image/png"));
      (await import("node:fs")).writeFileSync(c.path, Buffer.from(url.split(",")[1], "base64"));
      return true;
    }
    case "waitFor": {
      // The page's CSP forbids evaluating strings there: poll its state and test it here.
      const test = new Function("window", "return (" + c.expr + ");");
      const deadline = Date.now() + (c.timeout || 15000);
      for (;;) {
        const pv = await page.evaluate(() => window.__pv);
        if (test({ __pv: pv })) return true;
        if (Date.now() > deadline) throw new Error("timed out waiting for " + c.expr + "; state " + JSON.stringify(pv));
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    case "page": return { url: page.url(), html: await page.content() };
    case "close": await page.close(); pages.delete(c.name); return true;
    case "quit": await browser.close(); process.exit(0);
    default: throw new Error("unknown command " + c.cmd);
  }
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  let out;
  try {
    out = { ok: true, value: await run(JSON.parse(line)) };
  } catch (e) {
    out = { ok: false, error: String(e && e.stack || e) };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}
await browser.close();
