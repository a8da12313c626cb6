// siftr-probe plot: draws the flows of the embedded data with uPlot.
// window.siftrPlot reports what was drawn (tests read it): flows, series
// (uPlot series without the x axis), charts, errors, ready.
"use strict";
(function () {
  const state = { ready: false, flows: 0, series: 0, charts: 0, errors: [] };
  window.siftrPlot = state;
  window.addEventListener("error", (e) => state.errors.push(String(e.message)));

  const data = JSON.parse(document.getElementById("siftr-data").textContent);
  const fields = data.fields;
  const controls = document.getElementById("controls");
  const container = document.getElementById("flows");
  const dirNames = ["in", "out"];

  function fmtBytes(v) {
    if (v == null) return "-";
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(2) + " GB";
    if (a >= 1e6) return (v / 1e6).toFixed(2) + " MB";
    if (a >= 1e3) return (v / 1e3).toFixed(1) + " kB";
    return v.toFixed(0) + " B";
  }
  function fmtMs(v) {
    if (v == null) return "-";
    return (v >= 100 ? v.toFixed(1) : v.toFixed(3)) + " ms";
  }
  function tickMs(v) {
    if (v == null) return "";
    return (v >= 1 ? String(+v.toPrecision(3)) : String(+v.toPrecision(2))) + " ms";
  }
  function bucketText(us) {
    if (us >= 1e6) return (us / 1e6).toPrecision(3) + " s";
    if (us >= 1e3) return (us / 1e3).toPrecision(3) + " ms";
    return us + " µs";
  }

  // Wheel zooms the x axis around the cursor; shift+drag pans it.
  function zoomPanPlugin() {
    return {
      hooks: {
        ready: (u) => {
          const over = u.over;
          over.addEventListener("wheel", (e) => {
            e.preventDefault();
            const x = u.posToVal(e.offsetX, "x");
            const { min, max } = u.scales.x;
            const f = e.deltaY < 0 ? 0.75 : 1 / 0.75;
            u.setScale("x", { min: x - (x - min) * f, max: x + (max - x) * f });
          }, { passive: false });
          over.addEventListener("mousedown", (e) => {
            if (!e.shiftKey) return;
            e.stopPropagation();
            e.preventDefault();
            const x0 = e.clientX;
            const { min, max } = u.scales.x;
            const perPx = (max - min) / over.clientWidth;
            const move = (m) => {
              const dx = (m.clientX - x0) * perPx;
              u.setScale("x", { min: min - dx, max: max - dx });
            };
            const up = () => {
              document.removeEventListener("mousemove", move);
              document.removeEventListener("mouseup", up);
            };
            document.addEventListener("mousemove", move);
            document.addEventListener("mouseup", up);
          }, true);
        },
      },
    };
  }

  function csvOf(flow) {
    const head = ["seconds", "direction"].concat(fields.map((f) => f.name + (f.panel === 1 ? "_ms" : "_bytes")));
    const lines = [head.join(",")];
    for (let i = 0; i < flow.x.length; i++) {
      const row = [flow.x[i], dirNames[flow.d[i]]];
      for (let k = 0; k < fields.length; k++) row.push(flow.v[k][i] == null ? "" : flow.v[k][i]);
      lines.push(row.join(","));
    }
    return lines.join("\n") + "\n";
  }

  function chart(flow, panel, el, group) {
    const idx = [];
    fields.forEach((f, k) => { if (f.panel === panel) idx.push(k); });
    if (idx.length === 0) return null;
    const n = flow.x.length;
    const cols = [flow.x];
    const series = [{ label: "s", value: (u, v) => (v == null ? "-" : v.toFixed(6) + " s") }];
    for (const k of idx) {
      const f = fields[k];
      for (const d of [1, 0]) {
        const a = new Array(n);
        const src = flow.v[k];
        for (let i = 0; i < n; i++) {
          if (flow.d[i] !== d) continue; // undefined: the other direction's point, spanned over
          let v = src[i];
          if (panel === 1 && v != null && v <= 0) v = null; // log scale
          a[i] = v;
        }
        cols.push(a);
        const s = {
          label: f.label + " (" + dirNames[d] + ")",
          stroke: f.color,
          value: (u, v) => (panel === 1 ? fmtMs(v) : fmtBytes(v)),
          spanGaps: false,
        };
        if (d === 0) {
          s.paths = () => null; // inbound: points only
          s.points = { show: true, size: 4, fill: f.color, stroke: f.color };
        } else {
          s.width = 1.5;
          s.points = { show: false };
        }
        series.push(s);
      }
    }
    const opts = {
      width: Math.max(el.clientWidth, 400),
      height: panel === 0 ? 320 : 220,
      title: panel === 0 ? "bytes" : "milliseconds (log scale)",
      scales: { x: { time: false }, y: panel === 1 ? { distr: 3 } : {} },
      axes: [
        { label: "seconds since the flow's first record" },
        { values: (u, ticks) => ticks.map(panel === 1 ? tickMs : fmtBytes), size: 80 },
      ],
      series: series,
      cursor: { sync: { key: "flow" + flow.id, setSeries: false }, drag: { x: true, y: false } },
      legend: { live: true },
      plugins: [zoomPanPlugin()],
      hooks: {
        setScale: [(u, key) => {
          if (key !== "x" || group.syncing) return;
          group.syncing = true;
          for (const o of group.charts) {
            if (o !== u) o.setScale("x", { min: u.scales.x.min, max: u.scales.x.max });
          }
          group.syncing = false;
        }],
      },
    };
    const u = new uPlot(opts, cols, el);
    group.charts.push(u);
    state.series += series.length - 1;
    state.charts++;
    return u;
  }

  const all = [];
  const toggles = document.createElement("div");
  toggles.className = "toggles";
  toggles.append("Flows: ");
  controls.append(toggles);
  const help = document.createElement("p");
  help.className = "help";
  help.textContent = "Drag to zoom, wheel to zoom, shift+drag to pan, double-click to reset; " +
    "click a legend entry to hide or show its series. Lines: outbound records; dots: inbound.";
  controls.append(help);

  for (const flow of data.flows) {
    const card = document.createElement("section");
    card.className = "flow";
    const h = document.createElement("h2");
    h.textContent = flow.title;
    const sub = document.createElement("p");
    sub.className = "sub";
    sub.textContent = flow.sub + " · " + flow.records.toLocaleString("en") + " records";
    card.append(h, sub);
    if (flow.bucket_us > 0) {
      const note = document.createElement("p");
      note.className = "decimated";
      note.textContent = "Decimated for display: " + flow.records.toLocaleString("en") + " records drawn as " +
        flow.points.toLocaleString("en") + " points, the minimum and maximum of each field per " +
        bucketText(flow.bucket_us) + " bucket (peaks kept). The CSV below holds these points, not every " +
        "record: siftr-probe convert exports the full data, and plot --max-points 0 draws it.";
      card.append(note);
    }
    const dl = document.createElement("button");
    dl.textContent = flow.bucket_us > 0 ? "Download the drawn points (decimated) as CSV" : "Download as CSV";
    dl.addEventListener("click", () => {
      const blob = new Blob([csvOf(flow)], { type: "text/csv" });
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = "flow-" + flow.id + (flow.bucket_us > 0 ? "-decimated-" + flow.bucket_us + "us" : "") + ".csv";
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    });
    card.append(dl);
    container.append(card);
    const group = { charts: [], syncing: false };
    for (const panel of [0, 1]) {
      const el = document.createElement("div");
      el.className = "chart";
      card.append(el);
      chart(flow, panel, el, group);
    }
    all.push(group);
    state.flows++;

    const label = document.createElement("label");
    const cb = document.createElement("input");
    cb.type = "checkbox";
    cb.checked = true;
    cb.addEventListener("change", () => { card.style.display = cb.checked ? "" : "none"; });
    label.append(cb, " " + flow.id);
    toggles.append(label);
  }

  window.addEventListener("resize", () => {
    for (const g of all) {
      for (const u of g.charts) u.setSize({ width: Math.max(u.root.parentNode.clientWidth, 400), height: u.height });
    }
  });
  document.body.dataset.series = String(state.series);
  document.body.dataset.flows = String(state.flows);
  state.ready = true;
})();
