// anomalyd web view: refreshes the live part of the page (#live) every data-refresh seconds
// by fetching the same address again, while the tab is visible. Everything else works
// without it; without scripts a <meta http-equiv=refresh> reloads the whole page instead.
"use strict";
(function () {
  const body = document.body;
  body.dataset.live = "on";
  const seconds = Number(body.dataset.refresh) || 10;
  async function refresh() {
    if (document.hidden) return;
    try {
      const answer = await fetch(location.href, { cache: "no-store" });
      if (!answer.ok) return;
      const page = new DOMParser().parseFromString(await answer.text(), "text/html");
      const fresh = page.getElementById("live");
      const current = document.getElementById("live");
      if (fresh && current) {
        current.replaceWith(document.importNode(fresh, true));
        body.dataset.refreshed = String((Number(body.dataset.refreshed) || 0) + 1);
      }
    } catch (_) {
      // The daemon is restarting or gone: the next tick tries again.
    }
  }
  setInterval(refresh, seconds * 1000);
})();
