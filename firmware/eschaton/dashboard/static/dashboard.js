// The dashboard's only script: confirmations, live updates (server-sent events) and plots.
(function () {
  "use strict";
  // Actions that need a confirmation carry data-confirm; the server refuses them without it.
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (ev) {
      if (!window.confirm(f.dataset.confirm)) { ev.preventDefault(); return; }
      f.querySelector("input[name=confirm]").value = "yes";
    });
  });

  var plots = {};  // meter name -> {u: uPlot, data: [[t], [rate]], factor, span}
  var span = "hour";
  var pinBase = {};

  function makePlot(el) {
    var meter = el.dataset.meter, factor = parseFloat(el.dataset.factor || "1");
    var p = plots[meter] = {el: el, factor: factor, data: [[], []], u: null};
    var width = Math.max(200, el.clientWidth || 600);
    p.u = new uPlot({width: width, height: 200, scales: {x: {time: true}},
                     series: [{}, {label: el.dataset.unit, stroke: "#2f6e57", fill: "rgba(47,110,87,.12)"}]},
                    p.data, el);
    load(meter);
  }

  function load(meter) {
    var p = plots[meter];
    fetch("/meters/history?meter=" + encodeURIComponent(meter) + "&span=" + span,
          {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (h) {
      p.data = [h.t, h.rate.map(function (r) { return r * p.factor; })];
      draw(p);
    });
  }

  function draw(p) {
    p.u.setData(p.data);
    p.el.dataset.points = String(p.data[0].length);
    var n = p.data[1].length;
    p.el.dataset.last = n ? String(p.data[1][n - 1]) : "";
  }

  document.querySelectorAll(".spans button").forEach(function (b) {
    b.addEventListener("click", function () {
      span = b.dataset.span;
      document.querySelectorAll(".spans button").forEach(function (x) { x.classList.toggle("on", x === b); });
      Object.keys(plots).forEach(load);
    });
  });

  function fmt(v) { return (typeof v === "number") ? String(+v.toPrecision(6)) : String(v); }

  function onSample(s) {
    s.meters.forEach(function (m) {
      document.querySelectorAll('[data-meter-total="' + m.name + '"]').forEach(function (e) { e.textContent = fmt(m.total); });
      document.querySelectorAll('[data-meter-rate="' + m.name + '"]').forEach(function (e) {
        e.textContent = fmt((m.rate_per_s || 0) * parseFloat(e.dataset.factor || "1"));
      });
      var row = document.getElementById("pin-" + m.name);
      if (row && m.counts !== undefined) {
        if (pinBase[m.name] === undefined) { pinBase[m.name] = m.counts; }
        row.querySelector('[data-k="counts"]').textContent = m.counts + " (since open: " + (m.counts - pinBase[m.name]) + ")";
      }
      document.querySelectorAll('[data-cal-since="' + m.name + '"]').forEach(function (e) {
        if (m.counts !== undefined) { e.textContent = String(m.counts - parseInt(e.dataset.start, 10)); }
      });
      var p = plots[m.name];
      if (p && span === "hour" && m.rate_per_s !== undefined) {
        p.data[0].push(s.t); p.data[1].push(m.rate_per_s * p.factor);
        draw(p);
      }
    });
    (s.valves || []).forEach(function (v) {
      var cell = document.querySelector('#valve-' + CSS.escape(v.name) + ' [data-k="state"]');
      if (cell) { cell.textContent = v.open ? "open" : "closed"; }
    });
    (s.relays || []).forEach(function (r) {
      var cell = document.querySelector('#relay-' + CSS.escape(r.name) + ' [data-k="state"]');
      if (cell) { cell.textContent = r.on ? "on" : "off"; }
    });
  }

  // The microgrid page: a contract's numbers change with its invoices, payments and cuts, so such
  // an event redraws the contracts section from the server (at most twice a second).
  var mgTimer = null;
  function redrawMicrogrid() {
    mgTimer = null;
    fetch(window.location.pathname, {credentials: "same-origin"}).then(function (r) { return r.text(); })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("mg");
        var mg = document.getElementById("mg");
        if (fresh && mg) {
          mg.innerHTML = fresh.innerHTML;
          mg.dataset.redraws = String(parseInt(mg.dataset.redraws || "0", 10) + 1);
        }
      });
  }

  function onEvent(e) {
    if (document.getElementById("mg") && ["microgrid", "supply", "payments"].indexOf(e.source) >= 0 && !mgTimer) {
      mgTimer = window.setTimeout(redrawMicrogrid, 500);
    }
    var list = document.getElementById("live");
    if (!list) { return; }
    var li = document.createElement("li");
    var when = new Date(e.at_ms).toLocaleTimeString();
    var what = e.amount !== undefined ? " " + e.amount + " sat" : "";
    li.textContent = when + " " + e.source + " " + e.kind + what;
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 30) { list.removeChild(list.lastChild); }
  }

  document.querySelectorAll(".plot").forEach(makePlot);
  // A phone turned sideways (or a resized window): plots follow their container's width.
  window.addEventListener("resize", function () {
    Object.keys(plots).forEach(function (k) {
      var p = plots[k];
      p.u.setSize({width: Math.max(200, p.el.clientWidth), height: 200});
    });
  });

  var cal = document.getElementById("cal-out");
  if (cal) {
    var upd = function () {
      var n = parseFloat(document.getElementById("cal-pulses").value);
      var q = parseFloat(document.getElementById("cal-qty").value);
      cal.textContent = (n > 0 && q > 0) ? fmt(n / q) : "?";
    };
    document.getElementById("cal-pulses").addEventListener("input", upd);
    document.getElementById("cal-qty").addEventListener("input", upd);
  }

  if (window.EventSource && document.body.dataset.csrf) {
    var es = new EventSource("/events");
    es.addEventListener("sample", function (m) { onSample(JSON.parse(m.data)); });
    es.addEventListener("event", function (m) { onEvent(JSON.parse(m.data)); });
  }
})();
