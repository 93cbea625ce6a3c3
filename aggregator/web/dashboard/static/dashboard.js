// Progressive enhancement only: every number is also in the page's tables.
(function () {
  "use strict";
  var tip = document.getElementById("tip");
  function show(el) {
    var t = el.querySelector("title");
    if (!tip || !t) return;
    tip.textContent = t.textContent;
    tip.hidden = false;
    var r = el.getBoundingClientRect();
    tip.style.left = (window.scrollX + r.right + 8) + "px";
    tip.style.top = (window.scrollY + r.top - 8) + "px";
  }
  function hide() { if (tip) tip.hidden = true; }
  document.querySelectorAll("svg .pt, svg [tabindex]").forEach(function (el) {
    el.addEventListener("mouseenter", function () { show(el); });
    el.addEventListener("focus", function () { show(el); });
    el.addEventListener("mouseleave", hide);
    el.addEventListener("blur", hide);
  });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") hide(); });
  // PNG export: draw the inline SVG onto a canvas (no network, no library).
  document.querySelectorAll("button.png").forEach(function (btn) {
    btn.hidden = false;
    btn.addEventListener("click", function () {
      var svg = document.querySelector(btn.getAttribute("data-target"));
      if (!svg) return;
      var data = new XMLSerializer().serializeToString(svg);
      var img = new Image();
      var w = svg.viewBox.baseVal.width || svg.clientWidth, h = svg.viewBox.baseVal.height || svg.clientHeight;
      // The caption line above the chart (as the SVG downloads have): what, when, compared with whom.
      var caption = btn.getAttribute("data-caption") || "", top = caption ? 24 : 0;
      img.onload = function () {
        var c = document.createElement("canvas");
        c.width = w * 2; c.height = (h + top) * 2;
        var ctx = c.getContext("2d");
        ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height);
        if (caption) {
          ctx.fillStyle = "#000"; ctx.font = "bold 26px system-ui, sans-serif";
          ctx.fillText(caption, 16, 32, c.width - 32);
        }
        ctx.drawImage(img, 0, top * 2, w * 2, h * 2);
        var a = document.createElement("a");
        a.download = btn.getAttribute("data-name") || "chart.png";
        a.href = c.toDataURL("image/png");
        document.body.appendChild(a); a.click(); a.remove();
      };
      img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(data);
    });
  });
})();
