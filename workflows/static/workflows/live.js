// Live progress on an active execution's admin page: reload every few seconds while the tab is visible.
// The page includes this file only while the execution is active, so a finished one stops refreshing.
(function () {
  "use strict";
  var marker = document.getElementById("wf-live");
  if (!marker) return;
  var seconds = parseFloat(marker.getAttribute("data-refresh-seconds")) || 2;
  var key = "wf-live-scroll:" + location.pathname;
  var saved = sessionStorage.getItem(key);
  if (saved !== null) {
    sessionStorage.removeItem(key);
    window.scrollTo(0, parseInt(saved, 10) || 0);
  }
  function tick() {
    if (document.hidden) {
      setTimeout(tick, seconds * 1000);
      return;
    }
    sessionStorage.setItem(key, String(window.scrollY));
    location.reload();
  }
  setTimeout(tick, seconds * 1000);
})();
