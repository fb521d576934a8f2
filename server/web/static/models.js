// Models: each release's held-back test numbers beside the model before it (or the baseline its
// evaluation report compared it with), and its precision-recall curves, confusion matrix and
// automation-threshold curve, all from the signed bundle's metrics.
"use strict";
(() => {
  const T = window.Trapline;
  const ROWS = [["images", "test images", 0], ["precision", "precision", 3], ["recall", "recall", 3], ["f1", "F1", 3],
    ["map50", "mAP50 (classes present)", 3], ["map50_95", "mAP50-95", 3], ["mean_iou", "mean IoU of matches", 3],
    ["image_accuracy", "image-level animal/empty accuracy", 3]];

  function compare(card, test, other, otherLabel) {
    const table = card.querySelector(".compare");
    const head = T.el("tr", {}, T.el("th", {}, ""), T.el("th", { class: "num" }, "this model"), T.el("th", { class: "num" }, otherLabel || "–"), T.el("th", { class: "num" }, "change"));
    table.tHead.replaceChildren(head);
    const animalAp = (m) => m?.per_class?.animal?.ap50;
    const rows = [...ROWS.map(([key, label, digits]) => [label, test[key], other?.[key], digits]), ["animal AP50", animalAp(test), animalAp(other), 3]];
    table.tBodies[0].replaceChildren(...rows.map(([label, mine, theirs, digits]) => {
      const delta = typeof mine === "number" && typeof theirs === "number" ? mine - theirs : null;
      const cls = delta === null || Math.abs(delta) < 1e-9 || digits === 0 ? "" : delta > 0 ? "better" : "worse";
      return T.el("tr", { "data-metric": label }, T.el("td", {}, label), T.el("td", { class: "num" }, T.fmt(mine, digits)),
        T.el("td", { class: "num" }, T.fmt(theirs, digits)),
        T.el("td", { class: `num ${cls}` }, delta === null || digits === 0 ? "" : `${delta > 0 ? "+" : ""}${delta.toFixed(digits)}`));
    }));
  }

  function pr(node, test, other, otherLabel) {
    const curves = test.pr_curves || {};
    const grid = Array.from({ length: 101 }, (_, i) => i / 100);
    const series = Object.entries(curves).map(([cls, precision], i) => ({ name: `${cls}`, type: "line", showSymbol: false, step: "end",
      color: T.colorOf(cls, i), data: grid.map((r, k) => [r, precision[k]]) }));
    for (const [cls, precision] of Object.entries(other?.pr_curves || {})) {
      series.push({ name: `${cls} · ${otherLabel}`, type: "line", showSymbol: false, step: "end", lineStyle: { type: "dashed", width: 1.5 },
        color: T.colorOf(cls, 0), data: grid.map((r, k) => [r, precision[k]]) });
    }
    node.dataset.curves = String(Object.keys(curves).length);
    if (!series.length) { T.empty(node, "No precision–recall curve in this bundle (re-run train evaluate)"); return; }
    T.draw(node, { legend: { top: 0, type: "scroll" }, tooltip: { trigger: "axis", valueFormatter: (v) => T.fmt(v, 2) },
      xAxis: { type: "value", name: "recall", nameLocation: "middle", nameGap: 26, min: 0, max: 1 },
      yAxis: { type: "value", name: "precision", min: 0, max: 1 }, series });
  }

  function confusion(node, test) {
    const matrix = test.confusion; const classes = test.classes;
    if (!matrix || !classes) { T.empty(node, "No confusion matrix in this bundle"); return; }
    const labels = [...classes, "background"];
    const cells = [];
    matrix.forEach((row, truth) => row.forEach((n, predicted) => cells.push([predicted, truth, n])));
    node.dataset.cells = String(cells.length);
    T.draw(node, { tooltip: { trigger: "item", formatter: (p) => `true ${labels[p.value[1]]}, predicted ${labels[p.value[0]]}: ${p.value[2]}` },
      grid: { left: 96, right: 16, top: 10, bottom: 54 },
      xAxis: { type: "category", data: labels, name: "predicted", nameLocation: "middle", nameGap: 34, splitArea: { show: true } },
      yAxis: { type: "category", data: labels, name: "true", nameLocation: "middle", nameGap: 70, inverse: true, splitArea: { show: true } },
      visualMap: { show: false, min: 0, max: Math.max(1, ...cells.map((c) => c[2])), inRange: { color: ["#f6f3ec", "#2f7d4a"] } },
      series: [{ type: "heatmap", data: cells, label: { show: true, fontSize: 13 }, itemStyle: { borderColor: "#fff", borderWidth: 2 } }] });
  }

  function threshold(node, test) {
    const curve = test.threshold_curve || [];
    if (!curve.length) { T.empty(node, "No threshold curve in this bundle"); return; }
    node.dataset.points = String(curve.length);
    const chosen = test.threshold_for_precision?.threshold;
    T.draw(node, { legend: { top: 0 }, tooltip: { trigger: "axis", valueFormatter: (v) => T.fmt(v, 2) },
      xAxis: { type: "value", name: "confidence needed for an automatic animal/empty call", nameLocation: "middle", nameGap: 26, min: 0.5, max: 1 },
      yAxis: { type: "value", min: 0, max: 1 },
      series: [
        { name: "share of images decided", type: "line", showSymbol: false, color: "#3467a8", data: curve.map((p) => [p.confidence, p.handled]) },
        { name: "accuracy on them", type: "line", showSymbol: false, color: "#2f7d4a", data: curve.map((p) => [p.confidence, p.accuracy]),
          markLine: chosen !== null && chosen !== undefined && chosen >= 0.5 ? { symbol: "none", data: [{ xAxis: chosen, name: "target precision" }], label: { formatter: `≥${test.threshold_for_precision.target_precision} precise` } } : undefined },
      ] });
  }

  async function load() {
    const models = await T.api("/models");
    for (const card of document.querySelectorAll(".model")) {
      const index = models.findIndex((m) => String(m.id) === card.dataset.modelId);
      const model = models[index];
      const test = model.metrics.test_split || {};
      const previous = models.slice(index + 1).find((m) => m.name === model.name && m.metrics.test_split);
      const other = previous ? previous.metrics.test_split : model.metrics.test_split_baseline;
      const label = previous ? `v${previous.version}` : other ? "baseline" : null;
      card.querySelector(".compare-note").textContent = previous ? `compared with ${previous.name} v${previous.version}, the release before it`
        : other ? "compared with the baseline its evaluation report scored on the same test images" : "nothing to compare with yet";
      compare(card, test, other, label);
      pr(card.querySelector(".pr"), test, other, label);
      confusion(card.querySelector(".confusion"), test);
      threshold(card.querySelector(".threshold"), test);
    }
    document.body.dataset.ready = "1";
  }

  document.addEventListener("DOMContentLoaded", load);
})();
