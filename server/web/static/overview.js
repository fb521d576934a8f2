// Overview: activity over time, diel activity, frames per trap per day, the map, fleet health.
"use strict";
(() => {
  const T = window.Trapline;
  let by = "category";
  let leafletMap = null;

  // every day between the first and last (or the picked range), so a silent day shows as a gap
  const daysBetween = (first, last) => {
    const out = [];
    for (let t = Date.parse(`${first}T00:00:00Z`); t <= Date.parse(`${last}T00:00:00Z`); t += 86400000) out.push(new Date(t).toISOString().slice(0, 10));
    return out;
  };
  const span = (rows) => {
    const r = T.range(); const known = rows.map((x) => x.day).sort();
    const first = r.since || known[0]; const last = r.until || known[known.length - 1];
    return first && last ? daysBetween(first, last) : [];
  };

  async function activity() {
    const q = T.rangeQuery(); q.set("by", by);
    const rows = await T.api(`/stats/activity?${q}`);
    const node = document.getElementById("activity-chart");
    node.dataset.total = String(rows.reduce((n, r) => n + r.detections, 0));
    if (!rows.length) { T.empty(node, by === "species" ? "No labelled frames in this range yet" : "No detections in this range"); return rows; }
    const days = span(rows);
    const keys = [...new Set(rows.map((r) => r.key))];
    const series = keys.map((key, i) => {
      const per = Object.fromEntries(rows.filter((r) => r.key === key).map((r) => [r.day, r.detections]));
      return { name: key, type: "bar", stack: "all", barMaxWidth: 28, color: T.colorOf(key, i), data: days.map((d) => per[d] || 0) };
    });
    T.draw(node, {
      legend: { top: 0 },
      grid: { left: 56, right: 20, top: 36, bottom: 64 },
      xAxis: { type: "category", data: days, name: "day (UTC)", nameLocation: "middle", nameGap: 28, axisLabel: { hideOverlap: true } },
      yAxis: { type: "value", name: by === "species" ? "labelled frames" : "detections", minInterval: 1 },
      dataZoom: [{ type: "slider", height: 16, bottom: 4 }, { type: "inside" }],
      series,
    });
    return rows;
  }

  async function diel() {
    const q = T.rangeQuery();
    const data = await T.api(`/stats/diel?${q}`);
    const node = document.getElementById("diel-chart");
    const total = data.day.reduce((a, b) => a + b, 0) + data.night.reduce((a, b) => a + b, 0);
    node.dataset.total = String(total);
    document.getElementById("diel-note").textContent = data.solar_time_traps.length ? "local solar time" : "hours in UTC (no deployment longitude)";
    if (!total) { T.empty(node, "No detections in this range"); return; }
    T.draw(node, {
      legend: { top: 0 },
      xAxis: { type: "category", data: data.hours.map((h) => `${String(h).padStart(2, "0")}h`), name: "hour of day", nameLocation: "middle", nameGap: 28 },
      yAxis: { type: "value", name: "frames with a detection", minInterval: 1 },
      series: [
        { name: "day (colour)", type: "bar", stack: "light", color: T.COLORS.day, data: data.day },
        { name: "night (infrared)", type: "bar", stack: "light", color: T.COLORS.night, data: data.night },
      ],
    });
  }

  async function trapDays(devices) {
    const rows = await T.api(`/stats/trap-days?${T.rangeQuery()}`);
    const node = document.getElementById("trapdays-chart");
    node.dataset.cells = String(rows.length);
    if (!rows.length) { T.empty(node, "No frames in this range"); return; }
    const days = span(rows);
    const traps = [...new Set([...devices.map((d) => d.id), ...rows.map((r) => r.device_id)])].sort().reverse();
    node.style.height = `${Math.max(160, 70 + traps.length * 34)}px`;
    T.chart(node).resize();
    const max = Math.max(...rows.map((r) => r.frames));
    T.draw(node, {
      tooltip: { trigger: "item", formatter: (p) => `${traps[p.value[1]]} · ${days[p.value[0]]}<br>${p.value[2]} frames, ${p.value[3]} with a detection` },
      grid: { left: 90, right: 90, top: 10, bottom: 44 },
      xAxis: { type: "category", data: days, splitArea: { show: true }, axisLabel: { hideOverlap: true }, name: "day (UTC)", nameLocation: "middle", nameGap: 28 },
      yAxis: { type: "category", data: traps, splitArea: { show: true } },
      visualMap: { min: 0, max, calculable: true, orient: "vertical", right: 0, top: "center", itemHeight: 90, inRange: { color: ["#e4efe6", "#2f7d4a", "#123d22"] }, text: ["frames", ""] },
      series: [{ type: "heatmap", data: rows.map((r) => [days.indexOf(r.day), traps.indexOf(r.device_id), r.frames, r.with_detections]).filter((v) => v[0] >= 0),
        itemStyle: { borderColor: "#fff", borderWidth: 1 } }],
    });
  }

  function map(fleet) {
    const node = document.getElementById("map");
    const placed = fleet.devices.filter((d) => d.latitude !== null && d.longitude !== null);
    node.dataset.points = String(placed.length);
    const note = document.getElementById("map-note");
    if (!placed.length) { T.empty(node, "No deployment has coordinates yet"); note.textContent = ""; return; }
    if (fleet.map.tile_url && window.L) {
      note.textContent = "map tiles online";
      node.dataset.mode = "tiles";
      if (!leafletMap) {
        leafletMap = window.L.map(node, { attributionControl: true });
        window.L.tileLayer(fleet.map.tile_url, { attribution: fleet.map.attribution, maxZoom: 18 }).addTo(leafletMap);
      }
      const markers = placed.map((d) => window.L.circleMarker([d.latitude, d.longitude], {
        radius: 9, color: "#fff", weight: 2, fillColor: T.COLORS[d.health] || "#888", fillOpacity: 0.95,
      }).bindTooltip(`${d.id} · ${d.health}${d.location_name ? ` · ${d.location_name}` : ""}`, { permanent: true, direction: "right" }).addTo(leafletMap));
      leafletMap.fitBounds(window.L.featureGroup(markers).getBounds().pad(0.4), { maxZoom: 13 });
      return;
    }
    // offline: a plain longitude/latitude plot, same colours, no tiles to fetch
    note.textContent = "no map tiles configured: coordinates only";
    node.dataset.mode = "plot";
    const pad = (values) => { const lo = Math.min(...values); const hi = Math.max(...values); const m = Math.max((hi - lo) * 0.25, 0.01); return [lo - m, hi + m]; };
    const [x0, x1] = pad(placed.map((d) => d.longitude)); const [y0, y1] = pad(placed.map((d) => d.latitude));
    T.draw(node, {
      tooltip: { trigger: "item", formatter: (p) => `${p.data.name} · ${p.data.health}<br>${p.data.value[1].toFixed(4)}, ${p.data.value[0].toFixed(4)}` },
      grid: { left: 70, right: 30, top: 34, bottom: 44 },
      xAxis: { type: "value", name: "longitude", nameLocation: "middle", nameGap: 28, min: x0, max: x1, axisLabel: { formatter: (v) => v.toFixed(2) } },
      yAxis: { type: "value", name: "latitude", min: y0, max: y1, axisLabel: { formatter: (v) => v.toFixed(2) } },
      series: [{ type: "scatter", symbolSize: 18, label: { show: true, position: "right", formatter: (p) => p.data.name },
        data: placed.map((d) => ({ name: d.id, health: d.health, value: [d.longitude, d.latitude], itemStyle: { color: T.COLORS[d.health] || "#888", borderColor: "#fff", borderWidth: 2 } })) }],
    });
  }

  function kpis(fleet, rows) {
    const box = document.getElementById("kpis");
    const online = fleet.devices.filter((d) => d.health === "online").length;
    const attention = fleet.devices.filter((d) => d.health === "offline" || d.health === "stale").length;
    const detections = rows.reduce((n, r) => n + r.detections, 0);
    const animals = rows.filter((r) => r.key === "animal").reduce((n, r) => n + r.detections, 0);
    const item = (label, value, cls = "") => T.el("div", { class: `kpi ${cls}` }, T.el("span", { class: "value" }, String(value)), T.el("span", { class: "label" }, label));
    box.replaceChildren(item("traps online", `${online} / ${fleet.devices.length}`), item("need a look", attention, attention ? "bad" : ""),
      item("detections", detections), item("animals", animals));
  }

  async function refresh() {
    const fleet = await T.api("/stats/fleet");
    T.fillFleet(fleet.devices);
    map(fleet);
    const previous = by; by = "category";
    const categoryRows = previous === "category" ? await activity() : await T.api(`/stats/activity?${T.rangeQuery()}`);
    by = previous;
    if (by === "species") await activity();
    kpis(fleet, categoryRows);
    await Promise.all([diel(), trapDays(fleet.devices)]);
    document.body.dataset.ready = "1";
  }

  document.addEventListener("DOMContentLoaded", () => {
    T.setupRange(refresh);
    document.querySelectorAll("[data-by]").forEach((b) => b.addEventListener("click", async () => {
      document.querySelectorAll("[data-by]").forEach((x) => x.classList.toggle("on", x === b));
      by = b.dataset.by; await activity();
    }));
    refresh();
    setInterval(async () => T.fillFleet((await T.api("/stats/fleet")).devices), 30000);
  });
})();
