// Connects Playwright (connectOverCDP) and Puppeteer (connect) through the daemon's CDP proxy.
import { chromium } from "playwright-core";
import puppeteer from "puppeteer-core";
const cdpUrl = process.argv[2];
const pw = await chromium.connectOverCDP(cdpUrl);
const ctx = pw.contexts()[0];
const page = ctx.pages()[0] ?? (await ctx.newPage());
await page.setContent("<title>pw-ok</title><p id=x>hello</p>");
const pwTitle = await page.title();
await pw.close();
const pp = await puppeteer.connect({ browserWSEndpoint: cdpUrl });
const pages = await pp.pages();
const p2 = pages[0] ?? (await pp.newPage());
const ua = await pp.version();
await p2.evaluate(() => { document.title = "pp-ok"; });
const ppTitle = await p2.title();
await pp.disconnect();
console.log(JSON.stringify({ pwTitle, ppTitle, ua }));
