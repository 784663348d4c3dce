// node lockout.mjs BASE NAME PASSPHRASE WRONG_CODE ATTEMPTS SCREENSHOT_DIR
// A wrong code is refused with a message; after ATTEMPTS wrong codes the account is locked.
import { browser, check, login, run, shot } from "./lib.mjs";

run(async ([base, name, passphrase, wrong, attempts, dir]) => {
  const b = await browser();
  const page = await b.newPage();
  await login(page, base, name, passphrase, wrong);
  const error = page.locator("#login-error");
  check((await error.textContent()).includes("wrong name, passphrase or code"),
    `after a wrong code: ${await error.textContent()}`);
  check(page.url().endsWith("/console/login"), "a wrong code left the login page");
  await shot(page, dir, "login-wrong-code");
  for (let i = 1; i < Number(attempts); i++) {
    await login(page, base, name, passphrase, wrong);
  }
  const text = await error.textContent();
  check(/locked/.test(text), `no lockout message after ${attempts} failures: ${text}`);
  await shot(page, dir, "login-locked");
  await b.close();
});
