// The service worker of the tf-fracture web app: it caches every file of the site on install, so the
// app works offline after the first visit, and serves them cache-first. It also adds the headers that
// make the page cross-origin isolated (COOP/COEP), which LiteRT.js needs for its threaded WebAssembly:
// any static server will do, HTTPS or localhost. `tf-fracture export --web` fills in the two constants.
const VERSION = "__VERSION__";
const FILES = "__FILES__";
const CACHE = `tf-fracture-${VERSION}`;

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches.open(CACHE).then((cache) => cache.addAll(FILES)).then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("tf-fracture-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

function isolated(response) {
  if (response.status === 0) return response; // opaque: cannot be changed
  const headers = new Headers(response.headers);
  headers.set("Cross-Origin-Opener-Policy", "same-origin");
  headers.set("Cross-Origin-Embedder-Policy", "require-corp");
  headers.set("Cross-Origin-Resource-Policy", "same-origin");
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith(
    caches.open(CACHE).then(async (cache) => {
      const url = new URL(request.url);
      url.search = "";
      let cached = await cache.match(url.href);
      if (!cached && request.mode === "navigate") cached = await cache.match(new URL("./", self.registration.scope).href);
      return isolated(cached || (await fetch(request)));
    }),
  );
});
