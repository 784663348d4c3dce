// node scoped.mjs BASE NAME PASSPHRASE CODE VISIBLE_ID HIDDEN_ID SCREENSHOT_DIR
// An operator limited to a site sees that site's devices only, in the list and by address.
import { browser, check, login, run, shot } from "./lib.mjs";

run(async ([base, name, passphrase, code, visible, hidden, dir]) => {
  const b = await browser();
  const page = await b.newPage();
  await login(page, base, name, passphrase, code);
  await page.goto(`${base}/console/devices`);
  const ids = await page.locator("table.devices tbody td:first-child a").allTextContents();
  check(ids.includes(visible), `${visible} not listed: ${ids}`);
  check(!ids.includes(hidden), `${hidden} listed to a scoped operator: ${ids}`);
  await shot(page, dir, "devices-scoped");
  const r = await page.goto(`${base}/console/devices/${hidden}`);
  check(r.status() === 404, `the hidden device's page answered ${r.status()}`);
  await b.close();
});
