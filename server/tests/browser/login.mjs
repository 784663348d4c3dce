// node login.mjs BASE NAME PASSPHRASE CODE SCREENSHOT_DIR [DEVICE_ID]
// Logs in with passphrase and second factor, then visits (and screenshots) every page,
// by keyboard where it matters: the skip link and the login form.
import { browser, check, login, run, shot, watch } from "./lib.mjs";

run(async ([base, name, passphrase, code, dir, device]) => {
  const b = await browser();
  const page = await b.newPage({ viewport: { width: 1280, height: 800 } });
  const problems = watch(page);
  await page.goto(`${base}/console/login`);
  await shot(page, dir, "login");
  // Keyboard: the first Tab reaches the skip link.
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement.textContent) === "Skip to content",
    "the first Tab does not reach the skip link");
  await login(page, base, name, passphrase, code);
  check(page.url() === `${base}/console/`, `after login at ${page.url()}`);
  check(await page.getByRole("heading", { name: "Fleet overview" }).isVisible(), "no overview");
  check(await page.locator("svg.chart").count() >= 2, "no charts on the overview");
  await shot(page, dir, "overview");
  const pages = [["devices", "/console/devices"], ["releases", "/console/releases"],
    ["deployments", "/console/deployments"], ["approvals", "/console/approvals"],
    ["audit", "/console/audit"], ["people", "/console/people"], ["records", "/console/records"]];
  if (device) { pages.push(["device", `/console/devices/${device}`]); }
  for (const [label, path] of pages) {
    const r = await page.goto(`${base}${path}`);
    check(r.status() === 200, `${path}: ${r.status()}`);
    await shot(page, dir, label);
  }
  // A tablet: the navigation wraps, nothing overflows the viewport horizontally.
  await page.setViewportSize({ width: 768, height: 1024 });
  await page.goto(`${base}/console/`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > innerWidth + 1);
  check(!overflow, "the overview overflows a tablet's width");
  await shot(page, dir, "overview-tablet");
  check(problems.length === 0, problems.join("\n"));
  await b.close();
});
