// node passkey.mjs BASE NAME PASSPHRASE CODE REAUTH_CODE SCREENSHOT_DIR
// Passkeys with Chromium's virtual authenticator (CDP WebAuthn domain): log in with the
// code, add a passkey from the account page (re-authenticating with a second code), log out,
// log in with passphrase and passkey.
import { browser, check, login, run, shot, watch } from "./lib.mjs";

run(async ([base, name, passphrase, code, reauthCode, dir]) => {
  const b = await browser();
  const context = await b.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const problems = watch(page);
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2", transport: "usb", hasResidentKey: false,
      hasUserVerification: false, automaticPresenceSimulation: true,
    },
  });

  await login(page, base, name, passphrase, code);
  check(page.url() === `${base}/console/`, `after login at ${page.url()}`);
  await page.getByRole("link", { name }).click();
  await page.waitForLoadState("load");
  check(page.url() === `${base}/console/account`, `account page at ${page.url()}`);
  check(await page.getByText("No passkeys yet.").isVisible(), "a new person has passkeys?");
  await shot(page, dir, "account");

  await page.getByLabel("Name it").fill("virtual key");
  await page.locator("#add-passphrase").fill(passphrase);
  await page.locator("#add-totp").fill(reauthCode);
  await Promise.all([
    page.waitForEvent("load"),
    page.getByRole("button", { name: "Add a passkey" }).click(),
  ]);
  const status = await page.locator("#passkey-status").textContent();
  const row = page.locator("#passkeys tbody tr", { hasText: "virtual key" });
  check(await row.count() === 1, `no passkey row after adding one (status: ${status})`);
  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  check(credentials.length === 1, `the authenticator holds ${credentials.length} credentials`);
  check(await row.getAttribute("data-passkey") ===
    Buffer.from(credentials[0].credentialId, "base64").toString("hex"),
    "the listed passkey is not the authenticator's");
  await shot(page, dir, "account-passkey");

  await page.getByRole("button", { name: "Log out" }).click();
  await page.waitForLoadState("load");
  await page.goto(`${base}/console/login`);
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Passphrase").fill(passphrase);
  await shot(page, dir, "login-passkey");
  await Promise.all([
    page.waitForURL(`${base}/console/`),
    page.getByRole("button", { name: "Log in with a passkey instead of the code" }).click(),
  ]);
  check(await page.getByRole("heading", { name: "Fleet overview" }).isVisible(),
    "no overview after the passkey login");
  const after = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  check(after.credentials[0].signCount >= 2, `sign count ${after.credentials[0].signCount}`);
  await page.goto(`${base}/console/account`);
  const used = await page.locator("#passkeys tbody tr td").nth(2).textContent();
  check(used !== "—", "the passkey's last use is not shown");

  // A wrong passphrase gets no challenge; the page says so.
  await page.getByRole("button", { name: "Log out" }).click();
  await page.waitForLoadState("load");
  await page.goto(`${base}/console/login`);
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Passphrase").fill("not the passphrase at all");
  await page.getByRole("button", { name: "Log in with a passkey instead of the code" }).click();
  await page.locator("#passkey-error").waitFor({ state: "visible" });
  check((await page.locator("#passkey-error").textContent()).includes("wrong"),
    "no error for a wrong passphrase");
  // The failed fetch logs a console error in Chromium ("Failed to load resource: 401"):
  // expected here, not a CSP violation or script error.
  const real = problems.filter((p) => !p.includes("401"));
  check(real.length === 0, real.join("\n"));
  await b.close();
});
