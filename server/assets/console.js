// Sigil console: progressive enhancement only; every page works without it.
// On a deployment page, refresh the per-status counts from the JSON API every few seconds.
"use strict";
(function () {
  var table = document.getElementById("counts");
  if (!table) { return; }
  var id = table.getAttribute("data-deployment");
  var note = document.getElementById("refreshed");
  var state = document.getElementById("deployment-state");
  function refresh() {
    fetch("/api/v1/deployments/" + encodeURIComponent(id) + "?limit=1", {
      credentials: "same-origin", headers: { "Accept": "application/json" }
    }).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.json();
    }).then(function (d) {
      var cells = table.querySelectorAll("td[data-status]");
      for (var i = 0; i < cells.length; i++) {
        var s = cells[i].getAttribute("data-status");
        if (d.counts && Object.prototype.hasOwnProperty.call(d.counts, s)) {
          cells[i].textContent = String(d.counts[s]);
        }
      }
      if (state && d.state) { state.textContent = d.state; }
      if (note) { note.textContent = "Updated " + new Date().toLocaleTimeString(); }
    }).catch(function (e) {
      if (note) { note.textContent = "Could not refresh: " + e.message; }
    });
  }
  setInterval(refresh, 2000);
})();

// Passkeys (WebAuthn): the browser talks to the authenticator, so these two flows need
// script; the JSON is the W3C's (PublicKeyCredential.parse*OptionsFromJSON and toJSON()).
(function () {
  if (!window.PublicKeyCredential || !PublicKeyCredential.parseRequestOptionsFromJSON) { return; }
  function post(url, body, csrf) {
    var headers = { "Content-Type": "application/json", "Accept": "application/json" };
    if (csrf) { headers["X-CSRF-Token"] = csrf; }
    return fetch(url, {
      method: "POST", credentials: "same-origin", headers: headers,
      body: JSON.stringify(body === undefined ? {} : body)
    }).then(function (r) {
      return r.text().then(function (text) {
        var v = null;
        try { v = text ? JSON.parse(text) : null; } catch (e) { v = null; }
        if (!r.ok) { throw new Error(v && v.message ? v.message : "HTTP " + r.status); }
        return v;
      });
    });
  }
  function assertion(options) {
    return navigator.credentials.get({
      publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options)
    }).then(function (c) { return c.toJSON(); });
  }

  // Login page: passphrase, then a passkey instead of the code.
  var login = document.getElementById("passkey-login");
  if (login) {
    var error = document.getElementById("passkey-error");
    login.hidden = false;
    login.addEventListener("click", function () {
      error.hidden = true;
      post("/api/v1/session/passkey/options", {
        name: document.getElementById("name").value.trim(),
        passphrase: document.getElementById("passphrase").value
      }).then(assertion).then(function (response) {
        return post("/api/v1/session/passkey", response);
      }).then(function () {
        window.location.assign("/console/");
      }).catch(function (e) {
        error.textContent = e.message;
        error.hidden = false;
      });
    });
  }

  // Account page without an authenticator app: confirm with a passkey before a removal.
  var confirmForm = document.getElementById("passkey-reauth");
  if (confirmForm) {
    var confirmStatus = document.getElementById("passkey-reauth-status");
    var confirmCsrf = confirmForm.querySelector("input[name=csrf_token]").value;
    document.getElementById("passkey-reauth-button").disabled = false;
    confirmForm.addEventListener("submit", function (event) {
      event.preventDefault();
      post("/api/v1/session/reauth/passkey/options", {
        passphrase: document.getElementById("passkey-reauth-passphrase").value
      }, confirmCsrf).then(assertion).then(function (response) {
        return post("/api/v1/session/reauth/passkey", response, confirmCsrf);
      }).then(function () {
        confirmStatus.textContent = "Confirmed: you may remove a passkey for the next five minutes.";
      }).catch(function (e) {
        confirmStatus.textContent = "Not confirmed: " + e.message;
      });
    });
  }

  // Account page: confirm it is you (code, or a passkey), then register a new passkey.
  var add = document.getElementById("add-passkey");
  if (add) {
    var status = document.getElementById("passkey-status");
    var csrf = add.querySelector("input[name=csrf_token]").value;
    document.getElementById("add-passkey-button").disabled = false;
    add.addEventListener("submit", function (event) {
      event.preventDefault();
      var passphrase = document.getElementById("add-passphrase").value;
      var code = document.getElementById("add-totp").value.trim();
      var confirm = code
        ? post("/api/v1/session/reauth", { passphrase: passphrase, totp: code }, csrf)
        : post("/api/v1/session/reauth/passkey/options", { passphrase: passphrase }, csrf)
            .then(assertion).then(function (response) {
              return post("/api/v1/session/reauth/passkey", response, csrf);
            });
      status.textContent = "Confirming it is you…";
      confirm.then(function () {
        return post("/api/v1/account/passkeys/options", {}, csrf);
      }).then(function (options) {
        status.textContent = "Follow your browser's prompt to create the passkey…";
        return navigator.credentials.create({
          publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options)
        });
      }).then(function (c) {
        return post("/api/v1/account/passkeys", {
          name: document.getElementById("passkey-name").value.trim(),
          credential: c.toJSON()
        }, csrf);
      }).then(function () {
        window.location.reload();
      }).catch(function (e) {
        status.textContent = "The passkey was not added: " + e.message;
      });
    });
  }
})();
