// Mycelium web app: live updates (server-sent events), the node-unreachable banner,
// folding the filters on phones and the service worker. (The language switch is a plain
// form with a button: changing a select must not navigate by itself, WCAG 3.2.2.)
// No framework: the pages are rendered by the node; this only refreshes the parts marked
// data-live-region when a change lands.
"use strict";
(function () {
  var body = document.body;
  var watched = (body.getAttribute("data-live") || "").split(/\s+/).filter(Boolean);
  var banner = document.getElementById("offline");
  var busy = false;   // a refresh is in flight
  var again = false;  // a change arrived meanwhile: refresh once more when it lands

  function setOffline(off) {
    if (banner) { banner.hidden = !off; }
  }

  // Dates: the node renders them in UTC inside <time datetime=… data-local>; show them in
  // this browser's time zone, formatted for the page's language.
  function localiseTimes(root) {
    if (!window.Intl || !Intl.DateTimeFormat) { return; }
    var format;
    try {
      format = new Intl.DateTimeFormat(document.documentElement.lang || undefined,
                                       { dateStyle: "medium", timeStyle: "short" });
    } catch (e) { return; }
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (isNaN(moment.getTime())) { return; }
      if (!el.title) { el.title = el.textContent; }
      el.textContent = format.format(moment);
    });
  }
  localiseTimes(document);

  function refresh() {
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { "X-Live": "1" } })
      .then(function (resp) {
        if (!resp.ok) { throw new Error("HTTP " + resp.status); }
        return resp.text();
      })
      .then(function (html) {
        setOffline(false);
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live-region]").forEach(function (old) {
          var next = fresh.getElementById(old.id);
          if (!next) { return; }
          // Keep keyboard focus where it was if the focused element survives by id.
          var focused = document.activeElement && old.contains(document.activeElement)
            ? document.activeElement.id : null;
          old.replaceWith(next);
          if (focused) { var target = document.getElementById(focused); if (target) target.focus(); }
        });
        // Tell screen readers what changed (the replaced regions are not announced).
        var said = document.querySelector("[data-live-region] [aria-live]");
        var status = document.getElementById("live-status");
        if (said && status) { status.textContent = said.textContent; }
        localiseTimes(document);
        body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () { setOffline(true); })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  function onChange(event) {
    var coll = "*";
    try { coll = JSON.parse(event.data).coll || "*"; } catch (e) { /* keep "*" */ }
    if (watched.indexOf("*") < 0 && watched.indexOf(coll) < 0 && coll !== "*") { return; }
    // At once for the first change; a burst during the refresh costs one more refresh.
    if (busy) { again = true; } else { refresh(); }
  }

  if (watched.length && window.EventSource) {
    var source = new EventSource("/events");
    source.addEventListener("change", onChange);
    source.addEventListener("open", function () {
      setOffline(false);
      body.setAttribute("data-live-ready", "1");
    });
    source.addEventListener("error", function () {
      if (source.readyState !== EventSource.OPEN) { setOffline(true); }
    });
  }

  // Search and filters: folded on phones, open where there is room.
  var filters = document.querySelector("details.filters-box");
  if (filters && window.matchMedia("(min-width: 40rem)").matches) { filters.open = true; }

  window.addEventListener("offline", function () { setOffline(true); });
  window.addEventListener("online", function () { setOffline(false); });

  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(function () {});
  }
})();
