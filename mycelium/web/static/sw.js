// Service worker: keeps the app shell (styles, script, icons, the "node unreachable"
// page) so the app opens at once, and shows that page instead of a browser error when
// the node does not answer. Signed-in pages themselves are never cached (private data).
"use strict";
var SHELL = "mycelium-shell-v1";
var ASSETS = ["/static/app.css", "/static/app.js", "/static/icon.svg",
              "/static/icon-192.png", "/manifest.webmanifest", "/offline"];

self.addEventListener("install", function (event) {
  event.waitUntil(caches.open(SHELL).then(function (cache) { return cache.addAll(ASSETS); })
    .then(function () { return self.skipWaiting(); }));
});

self.addEventListener("activate", function (event) {
  event.waitUntil(caches.keys().then(function (keys) {
    return Promise.all(keys.filter(function (k) { return k !== SHELL; })
      .map(function (k) { return caches.delete(k); }));
  }).then(function () { return self.clients.claim(); }));
});

self.addEventListener("fetch", function (event) {
  var req = event.request;
  if (req.method !== "GET") { return; }
  var url = new URL(req.url);
  if (url.origin !== self.location.origin || url.pathname === "/events") { return; }
  if (req.mode === "navigate") {
    event.respondWith(fetch(req).catch(function () { return caches.match("/offline"); }));
    return;
  }
  if (ASSETS.indexOf(url.pathname) >= 0) {
    // Network first so an upgraded node's assets win; the cache when it is away.
    event.respondWith(fetch(req).then(function (resp) {
      var copy = resp.clone();
      caches.open(SHELL).then(function (cache) { cache.put(req, copy); });
      return resp;
    }).catch(function () { return caches.match(req); }));
  }
});
