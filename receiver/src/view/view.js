// The live view's only script (served by anamon-receiver, no framework).
// A page with data-poll fetches its live part again every two seconds;
// the server has escaped every log text in it. A file page with
// data-follow appends the file's new bytes as they arrive, through
// Server-Sent Events, as text nodes (never parsed as HTML).
"use strict";
(function () {
  const body = document.body;
  const live = document.getElementById("live");
  const poll = body.dataset.poll;
  if (poll && live) {
    const url = poll + (poll.includes("?") ? "&" : "?") + "part=live";
    let busy = false;
    setInterval(async function () {
      if (busy) return;
      busy = true;
      try {
        const r = await fetch(url, { cache: "no-store" });
        if (r.ok) live.innerHTML = await r.text();
      } catch (e) {
        // The receiver restarts or the network blinks: the next poll retries.
      } finally {
        busy = false;
      }
    }, 2000);
  }
  const follow = body.dataset.follow;
  const text = document.getElementById("text");
  const state = document.getElementById("follow");
  if (follow && text && window.EventSource) {
    const source = new EventSource(follow + "?from=" + body.dataset.offset);
    const atEnd = function () {
      return window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    };
    const add = function (data, reset) {
      const stick = atEnd();
      if (reset) text.textContent = "";
      text.append(document.createTextNode(data));
      text.dataset.events = String(Number(text.dataset.events || 0) + 1);
      if (stick) window.scrollTo(0, document.body.scrollHeight);
    };
    source.onmessage = function (e) { add(e.data, false); };
    source.addEventListener("reset", function (e) { add(e.data, true); });
    source.onopen = function () { state.textContent = "· following"; };
    source.onerror = function () { state.textContent = "· reconnecting…"; };
  }
})();
