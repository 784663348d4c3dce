// node audit.mjs BASE NAME PASSPHRASE CODE EXPECT(verified|tampered) SCREENSHOT_DIR
// The audit page shows the chain and its signed checkpoints verified, or flagged after the
// database was edited.
import { browser, check, login, run, shot } from "./lib.mjs";

run(async ([base, name, passphrase, code, expect, dir]) => {
  const b = await browser();
  const page = await b.newPage();
  await login(page, base, name, passphrase, code);
  await page.goto(`${base}/console/audit`);
  const status = await page.locator("#chain-status").textContent();
  if (expect === "verified") {
    check(status.startsWith("Chain verified"), `expected verified: ${status}`);
    const signed = await page.locator("#checkpoint-status").textContent();
    check(/\d+ signed checkpoints? verified/.test(signed), `expected checkpoints verified: ${signed}`);
  } else {
    check(status.startsWith("Chain NOT verified"), `expected flagged: ${status}`);
    check((await page.locator("#checkpoint-status").count()) === 0, "no checkpoint verdict on a flagged chain");
  }
  await shot(page, dir, `audit-${expect}`);
  await b.close();
});
