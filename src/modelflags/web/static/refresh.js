// Refreshes the live part of a status page every data-refresh seconds, from the same address.
// It waits while someone is typing a reason, and while the tab is hidden. Nothing else runs here.
(function () {
  "use strict";
  var seconds = Number(document.body.getAttribute("data-refresh") || 0);
  if (!(seconds > 0)) {
    return;
  }
  function busy() {
    var active = document.activeElement;
    if (active && active.form) {
      return true;
    }
    var fields = document.querySelectorAll("input[name=reason]");
    for (var i = 0; i < fields.length; i += 1) {
      if (fields[i].value) {
        return true;
      }
    }
    return false;
  }
  function schedule() {
    window.setTimeout(refresh, seconds * 1000);
  }
  function refresh() {
    if (document.hidden || busy()) {
      schedule();
      return;
    }
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null || busy()) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        var here = document.getElementById("live");
        if (fresh && here) {
          here.replaceWith(document.importNode(fresh, true));
        }
      })
      .catch(function () {})
      .then(schedule);
  }
  schedule();
})();
