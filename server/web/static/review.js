// Review a cluster: a grid of crops; label the cluster (minus excluded crops) or selected crops.
"use strict";
(() => {
  const section = document.getElementById("review");
  if (!section) return;
  const run = section.dataset.run, cluster = section.dataset.cluster;
  const grid = document.getElementById("crops"), status = document.getElementById("status");
  const input = document.getElementById("label");
  let crops = [], focus = 0;
  const excluded = new Set(), selected = new Set();

  const call = async (path, body) => {
    const r = await fetch(`/api/v1${path}`, {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${await r.text()}`);
    return r.json();
  };

  function render() {
    grid.replaceChildren(...crops.map((c, i) => {
      const div = document.createElement("div");
      div.className = "crop" + (excluded.has(c.key) ? " excluded" : "") + (selected.has(c.key) ? " selected" : "") + (i === focus ? " focus" : "");
      div.dataset.key = c.key;
      div.tabIndex = -1;
      const img = document.createElement("img");
      img.src = `/api/v1/learning/crops/${c.key}.jpg`; img.width = 112; img.height = 112; img.alt = c.key; img.loading = "lazy";
      const caption = document.createElement("div");
      caption.className = "label";
      caption.textContent = c.label ? `${c.label.label} (${c.label.by})` : (c.suggestion ? `? ${c.suggestion} ${Math.round(100 * c.suggestion_probability)}%` : "");
      div.append(img, caption);
      div.addEventListener("click", (e) => { focus = i; (e.shiftKey ? toggle(selected, c.key) : toggle(excluded, c.key)); render(); });
      return div;
    }));
  }
  const toggle = (set, key) => (set.has(key) ? set.delete(key) : set.add(key));

  async function load() {
    const data = await fetch(`/api/v1/learning/runs/${run}/clusters/${cluster}`, { credentials: "same-origin" }).then((r) => r.json());
    crops = data.crops;
    const names = new Set(crops.flatMap((c) => [c.suggestion, c.label && c.label.label]).filter(Boolean));
    document.getElementById("species").replaceChildren(...[...names].map((n) => { const o = document.createElement("option"); o.value = n; return o; }));
    render();
  }

  async function apply(label) {
    if (!label) return;
    try {
      let result;
      if (selected.size) result = await call("/learning/labels", { keys: [...selected], label });
      else result = await call(`/learning/runs/${run}/clusters/${cluster}/label`, { label, exclude: [...excluded] });
      status.textContent = `${result.labelled} crop(s) labelled "${result.label}"`;
      selected.clear();
      await load();
    } catch (err) { status.textContent = String(err); }
  }

  document.getElementById("label-form").addEventListener("submit", (e) => {
    e.preventDefault(); input.blur(); apply(input.value.trim()); // back to the keys for the next crops
  });
  document.getElementById("not-animal").addEventListener("click", () => apply("not an animal"));
  document.getElementById("unsure").addEventListener("click", () => apply("unsure"));
  document.addEventListener("keydown", (e) => {
    if (e.target === input) { if (e.key === "Escape") input.blur(); return; }
    const key = e.key.toLowerCase();
    if (e.key === "ArrowRight") focus = Math.min(crops.length - 1, focus + 1);
    else if (e.key === "ArrowLeft") focus = Math.max(0, focus - 1);
    else if (key === "x" && crops[focus]) toggle(excluded, crops[focus].key);
    else if (key === "s" && crops[focus]) toggle(selected, crops[focus].key);
    else if (key === "n") { apply("not an animal"); return; }
    else if (key === "u") { apply("unsure"); return; }
    else if (key === "l") { e.preventDefault(); input.focus(); return; }
    else if (e.key === "Enter") { apply(input.value.trim()); return; }
    else return;
    e.preventDefault();
    render();
  });
  load();
})();
