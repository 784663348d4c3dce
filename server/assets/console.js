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
