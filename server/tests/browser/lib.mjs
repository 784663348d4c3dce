// Shared by the console's browser scenarios: Debian's chromium driven by playwright-core.
// Each scenario exits 0 on success and non-zero with a message on stderr on failure.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

export const CHROMIUM = process.env.SIGIL_CHROMIUM || "/usr/bin/chromium";

export async function browser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
}

export function check(cond, message) {
  if (!cond) { throw new Error(message); }
}

// Fails the scenario on a CSP violation or a script error in any page.
export function watch(page) {
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error") { problems.push(`console error: ${m.text()}`); }
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  return problems;
}

export async function login(page, base, name, passphrase, code) {
  await page.goto(`${base}/console/login`);
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Passphrase").fill(passphrase);
  await page.getByLabel("Authenticator code").fill(code);
  await page.getByRole("button", { name: "Log in", exact: true }).click();
  await page.waitForLoadState("load");
}

export async function shot(page, dir, name) {
  if (!dir) { return; }
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: `${dir}/${name}.png`, fullPage: true });
}

export async function run(main) {
  try {
    await main(process.argv.slice(2));
  } catch (e) {
    console.error(e && e.stack ? e.stack : String(e));
    process.exit(1);
  }
}
