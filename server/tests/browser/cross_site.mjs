// node cross_site.mjs BASE NAME PASSPHRASE CODE
// A form on another origin posting to the console (logout) does not act on the session.
import { browser, check, login, run } from "./lib.mjs";

run(async ([base, name, passphrase, code]) => {
  const b = await browser();
  const context = await b.newContext();
  const page = await context.newPage();
  await login(page, base, name, passphrase, code);
  check(page.url() === `${base}/console/`, "login failed");
  const csrf = await page.locator("input[name=csrf_token]").first().inputValue();
  // Another origin, served by the test itself: a form with even the right token.
  await context.route("http://evil.test/**", (route) => route.fulfill({
    contentType: "text/html",
    body: `<form id="f" method="post" action="${base}/console/logout">
      <input name="csrf_token" value="${csrf}"></form>`,
  }));
  const evil = await context.newPage();
  await evil.goto("http://evil.test/");
  await Promise.all([
    evil.waitForNavigation(),
    evil.evaluate(() => document.getElementById("f").submit()),
  ]);
  // The session survives: the overview still opens in the first tab.
  await page.goto(`${base}/console/`);
  check(page.url() === `${base}/console/`, `the cross-site post ended the session (${page.url()})`);
  check(!evil.url().startsWith("http://evil.test"), "the cross-site form was not submitted");
  // And a script on the other origin posting with fetch: no effect either.
  const evil2 = await context.newPage();
  await evil2.goto("http://evil.test/");
  const status = await evil2.evaluate(async ([url, token]) => {
    try {
      const r = await fetch(url, { method: "POST", credentials: "include", mode: "no-cors",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: `csrf_token=${token}` });
      return r.type;
    } catch (e) { return String(e); }
  }, [`${base}/console/logout`, csrf]);
  await page.goto(`${base}/console/`);
  check(page.url() === `${base}/console/`, `a cross-site fetch (${status}) ended the session`);
  await b.close();
});
