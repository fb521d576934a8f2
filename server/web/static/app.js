// Trapline dashboard: plain JavaScript, no libraries, data from /api/v1 (same origin, cookie auth).
"use strict";
const api = (path) => fetch(`/api/v1${path}`, { credentials: "same-origin" }).then((r) => {
  if (r.status === 401) { window.location = "/login"; throw new Error("not logged in"); }
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
});
const el = (tag, attrs = {}, text = "") => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
};
const ago = (iso) => {
  if (!iso) return "never";
  const s = (Date.now() - Date.parse(iso)) / 1000;
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
};

async function loadFleet() {
  const body = document.querySelector("#fleet tbody");
  if (!body) return;
  const devices = await api("/devices");
  body.replaceChildren(...devices.map((d) => {
    const tr = el("tr", { "data-device": d.id, "data-health": d.health });
    const name = el("td"); name.append(el("a", { href: `/traps/${d.id}` }, d.id)); tr.append(name);
    const st = el("td"); st.append(el("span", { class: `badge ${d.health}` }, d.health)); tr.append(st);
    tr.append(el("td", {}, ago(d.last_seen_at)));
    tr.append(el("td", {}, d.model_name ? `${d.model_name} v${d.model_version}` : "–"));
    tr.append(el("td", {}, d.spool_depth ?? "–"));
    tr.append(el("td", {}, d.dropped ?? "–"));
    tr.append(el("td", {}, d.last_error ?? ""));
    return tr;
  }));
}

function filterQuery() {
  const form = document.getElementById("filters");
  const params = new URLSearchParams();
  if (!form) return params;
  for (const [k, v] of new FormData(form).entries()) {
    if (v === "" || (k === "min_conf" && Number(v) === 0)) continue;
    params.set(k, k === "since" ? new Date(v).toISOString() : v);
  }
  return params;
}

function drawTimeline(counts) {
  const svg = document.getElementById("timeline");
  if (!svg) return;
  const perDay = {};
  for (const c of counts) perDay[c.day] = (perDay[c.day] || 0) + c.detections;
  const days = Object.keys(perDay).sort();
  const max = Math.max(1, ...Object.values(perDay));
  const w = Number(svg.getAttribute("width")), h = Number(svg.getAttribute("height")) - 20;
  const bw = Math.max(4, Math.min(40, (w - 10) / Math.max(days.length, 1) - 4));
  svg.replaceChildren(...days.flatMap((day, i) => {
    const bh = (perDay[day] / max) * (h - 10);
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    Object.entries({ x: 5 + i * (bw + 4), y: h - bh, width: bw, height: bh, fill: "#2f5d3a", "data-day": day, "data-count": perDay[day] })
      .forEach(([k, v]) => rect.setAttribute(k, v));
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = `${day}: ${perDay[day]} detections`;
    rect.append(title);
    return [rect];
  }));
}

function fillCounts(counts) {
  const body = document.querySelector("#counts tbody");
  if (!body) return;
  const total = {};
  for (const c of counts) total[`${c.device_id}|${c.category}`] = (total[`${c.device_id}|${c.category}`] || 0) + c.detections;
  body.replaceChildren(...Object.entries(total).map(([key, n]) => {
    const [device, category] = key.split("|");
    const tr = el("tr"); tr.append(el("td", {}, device), el("td", {}, category), el("td", {}, String(n)));
    return tr;
  }));
}

function shot(frame) {
  const div = el("div", { class: "shot", "data-frame": frame.id });
  const sha = frame.media.thumbnail || frame.media.frame;
  if (sha) div.append(el("img", { src: `/api/v1/media/${sha}`, alt: frame.image_file, loading: "lazy" }));
  else div.append(el("div", { class: "placeholder" }, "picture not uploaded"));
  for (const d of frame.detections) {
    const [x, y, w, hh] = d.bbox;
    const box = el("div", { class: "box", style: `left:${x * 100}%;top:${y * 100}%;width:${w * 100}%;height:${hh * 100}%` });
    box.append(el("span", {}, `${d.category} ${Math.round(d.conf * 100)}%`));
    div.append(box);
  }
  div.append(el("div", { class: "caption" }, `${frame.device_id} · ${new Date(frame.captured_at).toLocaleString()}`));
  return div;
}

let cursor = null;
async function loadDetections(append = false) {
  const grid = document.getElementById("latest");
  if (!grid) return;
  const params = filterQuery();
  params.set("limit", "24");
  if (append && cursor) params.set("cursor", cursor);
  const page = await api(`/detections?${params}`);
  cursor = page.next_cursor;
  const shots = page.items.map(shot);
  if (append) grid.append(...shots); else grid.replaceChildren(...shots);
  document.getElementById("more").hidden = !cursor;
  const countParams = new URLSearchParams(filterQuery());
  countParams.delete("category"); countParams.delete("min_conf");
  const counts = (await api(`/counts/daily?${countParams}`))
    .filter((c) => !params.get("category") || c.category === params.get("category"));
  drawTimeline(counts);
  fillCounts(counts);
}

async function loadTrap() {
  const section = document.getElementById("trap");
  if (!section) return;
  const d = await api(`/devices/${section.dataset.device}`);
  const dl = document.getElementById("trap-health");
  const rows = [["Status", d.health], ["Last heard", ago(d.last_seen_at)], ["Model", d.model_name ? `${d.model_name} v${d.model_version}` : "–"],
    ["Agent", d.agent_version ?? "–"], ["Frames processed", d.frames_processed ?? "–"], ["Spool depth", d.spool_depth ?? "–"],
    ["Dropped", d.dropped ?? "–"], ["CPU temperature", d.cpu_temp_c ? `${d.cpu_temp_c} °C` : "–"], ["Last error", d.last_error ?? "none"]];
  dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
}

document.addEventListener("DOMContentLoaded", () => {
  const login = document.getElementById("login-form");
  if (login) {
    login.addEventListener("submit", async (event) => {
      event.preventDefault();
      const r = await fetch("/api/v1/session", { method: "POST", body: new FormData(login), credentials: "same-origin" });
      if (r.ok) window.location = "/"; else document.getElementById("login-error").hidden = false;
    });
    return;
  }
  document.getElementById("logout")?.addEventListener("click", async (e) => {
    e.preventDefault(); await fetch("/api/v1/session", { method: "DELETE" }); window.location = "/login";
  });
  document.getElementById("filters")?.addEventListener("submit", (e) => { e.preventDefault(); loadDetections(); });
  document.getElementById("more")?.addEventListener("click", () => loadDetections(true));
  loadFleet(); loadTrap(); loadDetections();
  setInterval(loadFleet, 15000);
});
