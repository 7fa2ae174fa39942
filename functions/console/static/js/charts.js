// Time charts for the telemetry page, drawn by uPlot (vendored, `window.uPlot`). uPlot because it
// is small (~50 KB), needs no build step (one IIFE file the page loads), and draws on a canvas, so
// hundreds of buckets times a dozen series stay cheap to draw and to redraw on resize.
//
// A chart here is stacked bars: one bar per time bucket, one coloured part per group (worker or
// session). uPlot draws series in order, so the stack is drawn top part first, each as a bar from
// zero to its running total, and the parts below paint over the lower end of the ones above.

import { h } from "./dom.js";

// Distinct hues that read on white and on the dark panel; "other" is always grey.
const PALETTE = [
  "#2557d6", "#e8710a", "#1a9c6b", "#c2185b", "#7b5cd6",
  "#0097a7", "#b58900", "#6d4c41", "#5c6bc0", "#8e24aa",
];
export const OTHER_COLOR = "#9aa1ad";

export function colorOf(index, label) {
  return label === OTHER ? OTHER_COLOR : PALETTE[index % PALETTE.length];
}

export const OTHER = "other";

/** 1234 → "1.2k", 3_400_000 → "3.4M", 0.00045 → "0.00045": short labels for an axis. */
export function compact(value) {
  const n = Math.abs(value);
  if (n >= 1e9) return `${+(value / 1e9).toFixed(1)}G`;
  if (n >= 1e6) return `${+(value / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${+(value / 1e3).toFixed(1)}k`;
  if (n >= 1 || n === 0) return `${+value.toFixed(2)}`;
  return `${+value.toPrecision(2)}`; // cents and below: keep two significant digits
}

/**
 * A stacked-bar chart in `container` (which it fills), sized to the container's width.
 *   xs:      bucket starts, seconds since 1970 (uPlot shows them in the browser's local time)
 *   step:    a bucket's length in seconds (pads the x range so the edge bars show whole)
 *   groups:  [{label, color, values}] bottom of the stack first; values has one number per x
 *   axis:    formats a y value for the axis; value: formats one for the legend
 * Returns {resize(), destroy()}.
 */
export function stackedBars(container, { xs, step, groups, axis, value, height = 220 }) {
  const uPlot = window.uPlot;
  if (!uPlot) throw new Error("the chart library did not load; reload the page");
  const totals = [];
  let running = xs.map(() => 0);
  for (const group of groups) {
    running = running.map((sum, i) => sum + (group.values[i] || 0));
    totals.push(running);
  }
  const sums = groups.map((group) => group.values.reduce((sum, v) => sum + (v || 0), 0));
  // Top of the stack first: each drawn later (lower) part covers the previous bar's lower end.
  const order = groups.map((_, i) => i).reverse();
  const bars = uPlot.paths.bars({ size: [0.8, 48], gap: 1 });
  const options = {
    width: Math.max(320, container.clientWidth),
    height,
    cursor: { points: { show: false }, drag: { x: false, y: false } },
    legend: { live: true },
    scales: {
      x: { time: true, range: () => [xs[0] - step / 2, xs[xs.length - 1] + step / 2] },
      y: { range: (_, __, max) => [0, max > 0 ? max * 1.08 : 1] },
    },
    axes: [
      { stroke: axisText(), grid: { stroke: gridLine(), width: 1 }, ticks: { show: false } },
      {
        stroke: axisText(), grid: { stroke: gridLine(), width: 1 }, ticks: { show: false },
        size: 60, values: (_, ticks) => ticks.map(axis),
      },
    ],
    series: [
      // Off the plot the legend shows each group's total over the window; on it, one bucket's.
      { label: "Time", value: (_, t) => (t == null ? "whole window" : new Date(t * 1000).toLocaleString()) },
      ...order.map((i) => ({
        label: groups[i].label,
        stroke: groups[i].color,
        fill: groups[i].color,
        width: 0,
        paths: bars,
        points: { show: false },
        // The group's own amount, not the running total it is drawn at.
        value: (_, __, ___, idx) => value(idx == null ? sums[i] : groups[i].values[idx] || 0),
      })),
    ],
  };
  const data = [xs, ...order.map((i) => totals[i])];
  const plot = new uPlot(options, data, container);
  return {
    resize() {
      plot.setSize({ width: Math.max(320, container.clientWidth), height });
    },
    destroy() {
      plot.destroy();
    },
  };
}

/** The legend's colours by label, for a test or a reader of the DOM to match pixels against. */
export function legendColors(groups) {
  return JSON.stringify(Object.fromEntries(groups.map((g) => [g.label, g.color])));
}

/** A titled panel holding one chart. */
export function chartPanel(id, title) {
  const body = h("div", { class: "chart-body" });
  const panel = h("section", { class: "chart", id }, h("h2", {}, title), body);
  return { panel, body };
}

function cssVar(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

function axisText() {
  return cssVar("--muted", "#626873");
}

function gridLine() {
  return cssVar("--line", "#dfe1e6");
}
