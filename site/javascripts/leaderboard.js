// The leaderboard's filter and sort (home page): plain DOM, no library, nothing fetched.
(function () {
  "use strict";

  function init() {
    var table = document.getElementById("leaderboard");
    if (!table || table.dataset.ready) return;
    table.dataset.ready = "1";
    var text = document.getElementById("rp-filter");
    var area = document.getElementById("rp-area");
    var status = document.getElementById("rp-status");
    var count = document.getElementById("rp-count");
    var groups = Array.prototype.slice.call(table.tBodies);

    function rows(tbody) {
      return Array.prototype.slice.call(tbody.querySelectorAll("tr[data-paper]"));
    }

    function filter() {
      var words = text.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0, total = 0;
      groups.forEach(function (tbody) {
        var visible = 0;
        var areaOk = !area.value || tbody.dataset.area === area.value;
        rows(tbody).forEach(function (tr) {
          var ok = areaOk &&
            (!status.value || tr.dataset.statuses.split(" ").indexOf(status.value) >= 0) &&
            words.every(function (w) { return tr.dataset.text.indexOf(w) >= 0; });
          tr.hidden = !ok;
          visible += ok ? 1 : 0;
          total += 1;
        });
        tbody.hidden = visible === 0;
        shown += visible;
      });
      count.textContent = shown === total ? total + " papers" : shown + " of " + total + " papers";
    }

    function key(tr, col, kind) {
      var td = tr.cells[col];
      var v = td.hasAttribute("data-sort") ? td.getAttribute("data-sort") : td.textContent.trim();
      if (kind === "number") {
        return v === "" ? null : parseFloat(v);
      }
      return v === "" ? null : v.toLowerCase();
    }

    function sort(th, col) {
      var kind = th.dataset.kind;
      var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      sortable.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
      groups.forEach(function (tbody) {
        rows(tbody).sort(function (a, b) {
          var x = key(a, col, kind), y = key(b, col, kind);
          if (x === y) return 0;
          if (x === null) return 1;   // empty cells last, whichever the direction
          if (y === null) return -1;
          return (x < y ? -1 : 1) * dir;
        }).forEach(function (tr) { tbody.appendChild(tr); });
      });
    }

    // Sortable headers name their column (`data-col`): the groups' header row spans several.
    var sortable = table.querySelectorAll("thead th[data-kind]");
    sortable.forEach(function (th) {
      var col = parseInt(th.dataset.col, 10);
      th.tabIndex = 0;
      th.addEventListener("click", function () { sort(th, col); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(th, col); }
      });
    });
    [text, area, status].forEach(function (el) { el.addEventListener("input", filter); });
    filter();
  }

  if (typeof document$ !== "undefined") {
    document$.subscribe(init);
  } else {
    document.addEventListener("DOMContentLoaded", init);
  }
})();
