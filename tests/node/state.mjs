// A user's own Playwright: a fresh browser context from an exported storageState file, then
// what the test site sees (the Cookie header it received, HttpOnly cookies included) and the
// page's localStorage. Usage: node state.mjs STATE_FILE SITE_URL  -> one JSON line.
import { chromium } from "playwright-core";

const [file, site] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.PV_VIEWER_CHROMIUM || "chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const context = await browser.newContext({ storageState: file });
  const page = await context.newPage();
  await page.goto(site + "/echo");
  const cookies = await page.textContent("#c");
  const ls = await page.evaluate(() => localStorage.getItem("pv_ls"));
  console.log(JSON.stringify({ cookies, ls }));
} finally {
  await browser.close();
}
