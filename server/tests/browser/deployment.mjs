// node deployment.mjs BASE ID CREATOR CREATOR_LOGIN CREATOR_REAUTH APPROVER APPROVER_LOGIN
//      APPROVER_REAUTH PASSPHRASE SCREENSHOT_DIR
// Four eyes: the deployment's creator cannot approve it; another operator can, and then it
// goes on. Then the page follows the devices' reports: it prints READY, the test checks
// devices in, and the confirmed count must rise without a reload (the page polls the API).
import { browser, check, login, run, shot, watch } from "./lib.mjs";

async function decide(page, passphrase, code) {
  await page.getByLabel("Reason").fill("canary looked fine");
  await page.locator("#decide-passphrase").fill(passphrase);
  await page.locator("#decide-totp").fill(code);
  await page.getByRole("button", { name: "Approve" }).click();
  await page.waitForLoadState("load");
}

run(async ([base, id, creator, cLogin, cReauth, approver, aLogin, aReauth, passphrase, dir]) => {
  const b = await browser();
  const url = `${base}/console/deployments/${id}`;
  const mine = await b.newPage();
  await login(mine, base, creator, passphrase, cLogin);
  await mine.goto(url);
  check((await mine.locator("#approval-state").textContent()).includes("Held"),
    "the deployment is not held for a second operator");
  await shot(mine, dir, "deployment-held");
  await decide(mine, passphrase, cReauth);
  const refused = await mine.locator("p.error").textContent();
  check(/created deployment .*second operator/.test(refused), `the creator's own approval: ${refused}`);
  await mine.goto(url);
  check((await mine.locator("#approval-state").textContent()).includes("Held"),
    "the creator alone released the hold");

  const ctx = await b.newContext();
  const theirs = await ctx.newPage();
  const problems = watch(theirs);
  await login(theirs, base, approver, passphrase, aLogin);
  await theirs.goto(url);
  await decide(theirs, passphrase, aReauth);
  check(theirs.url() === url, `after the approval at ${theirs.url()}`);
  const after = await theirs.locator("#approval-state").textContent();
  check(after.includes("No second approval"), `after another operator approved: ${after}`);
  await shot(theirs, dir, "deployment");

  const confirmed = theirs.locator('td[data-status="confirmed"]');
  const before = Number(await confirmed.textContent());
  console.log("READY");
  await theirs.waitForFunction(
    (n) => Number(document.querySelector('td[data-status="confirmed"]').textContent) > n,
    before, { timeout: 30000, polling: 250 });
  await shot(theirs, dir, "deployment-rollout");
  check(problems.length === 0, problems.join("\n"));
  await b.close();
});
