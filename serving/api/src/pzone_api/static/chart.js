// Small hand-drawn SVG line charts (no chart library): one device's tilt over time, and the live accuracy of every
// model version over time.

const SVG_NS = "http://www.w3.org/2000/svg";
const STATE_COLORS = { upright: "#1a7f37", tilted: "#b35c00", fallen: "#c62828" };

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function dayClock(ms) {
  return new Date(ms).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

/**
 * The tilt chart: x = measured time over the window ``[now - minutes, now]``, y = degrees from vertical (0 at the
 * bottom, 90 or more at the top), dots coloured by the reading's state.
 */
export function tiltChart(points, { minutes = 60, deviceId = "", now = Date.now(), width = 640 } = {}) {
  const height = width < 500 ? 220 : 260;
  const pad = { left: 44, right: 14, top: 14, bottom: 30 };
  const data = points
    .map((p) => ({ t: Date.parse(p.measured_at), deg: Number(p.tilt_deg), state: p.state }))
    .filter((p) => Number.isFinite(p.t) && Number.isFinite(p.deg));
  const end = Math.max(now, ...data.map((p) => p.t));
  const start = Math.min(end - minutes * 60_000, ...data.map((p) => p.t));
  const maxDeg = Math.min(180, Math.max(90, Math.ceil(Math.max(0, ...data.map((p) => p.deg)) / 30) * 30));
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const x = (t) => pad.left + ((t - start) / Math.max(1, end - start)) * plotW;
  const y = (deg) => pad.top + plotH - (Math.max(0, Math.min(maxDeg, deg)) / maxDeg) * plotH;

  const latest = data[data.length - 1];
  const label = latest
    ? `Tilt of ${deviceId} over the last ${minutes} minutes: ${data.length} readings, latest ${latest.deg.toFixed(1)}° (${latest.state}).`
    : `Tilt of ${deviceId}: no readings in the last ${minutes} minutes.`;
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "tilt-chart",
    role: "img",
    "aria-label": label,
    preserveAspectRatio: "xMidYMid meet",
  });
  root.append(svg("title", {}, label));

  // Grid and y axis: every 30 degrees.
  const grid = svg("g", { class: "chart-grid" });
  for (let deg = 0; deg <= maxDeg; deg += 30) {
    grid.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(deg), y2: y(deg) }));
    grid.append(
      svg("text", { x: pad.left - 6, y: y(deg) + 4, "text-anchor": "end", class: "chart-label" }, `${deg}°`),
    );
  }
  // X axis: five time ticks.
  for (let i = 0; i <= 4; i += 1) {
    const t = start + ((end - start) * i) / 4;
    const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
    grid.append(svg("line", { x1: x(t), x2: x(t), y1: pad.top + plotH, y2: pad.top + plotH + 4 }));
    grid.append(
      svg("text", { x: x(t), y: height - 8, "text-anchor": anchor, class: "chart-label" }, clock(t)),
    );
  }
  grid.append(
    svg("line", { x1: pad.left, x2: pad.left, y1: pad.top, y2: pad.top + plotH, class: "chart-axis" }),
  );
  root.append(grid);

  if (!data.length) {
    root.append(
      svg(
        "text",
        { x: pad.left + plotW / 2, y: pad.top + plotH / 2, "text-anchor": "middle", class: "chart-empty" },
        "No readings in this window",
      ),
    );
    return root;
  }

  const d = data.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.deg).toFixed(1)}`).join(" ");
  root.append(svg("path", { d, class: "chart-line", fill: "none" }));
  // Dots: all of them when few, else only the state changes and the last one.
  data.forEach((p, i) => {
    const changed = i === 0 || data[i - 1].state !== p.state;
    if (data.length <= 120 || changed || i === data.length - 1) {
      const dot = svg("circle", {
        cx: x(p.t).toFixed(1),
        cy: y(p.deg).toFixed(1),
        r: i === data.length - 1 ? 4.5 : 3,
        fill: STATE_COLORS[p.state] || "#5f6b7a",
        class: "chart-dot",
      });
      dot.append(svg("title", {}, `${new Date(p.t).toLocaleString()}: ${p.deg.toFixed(1)}° (${p.state})`));
      root.append(dot);
    }
  });
  return root;
}

// One colour per model version (by its place in the answer: oldest first); none of them is a state's colour.
const SERIES_COLORS = ["#0b5cad", "#7c3aed", "#0f766e", "#be185d", "#a16207", "#334155"];

/** The colour of the ``index``-th model version, shared by the chart and its legend. */
export function seriesColor(index) {
  return SERIES_COLORS[index % SERIES_COLORS.length];
}

function percent(value) {
  return `${Math.round(value * 1000) / 10}%`;
}

/**
 * The live accuracy chart: x = time over ``[since, until]``, y = ``metric`` (``accuracy`` or ``macro_f1``) from 0 to
 * 100 %, one line per model version through its buckets (drawn at the bucket's middle; a bucket left out breaks the
 * line), coloured by :func:`seriesColor`.
 */
export function accuracyChart(versions, { since, until, bucketS = 3600, metric = "accuracy", width = 640 } = {}) {
  const height = width < 500 ? 220 : 260;
  const pad = { left: 44, right: 14, top: 14, bottom: 30 };
  const bucketMs = bucketS * 1000;
  const start = Date.parse(since);
  const end = Math.max(Date.parse(until), start + bucketMs);
  const metricName = metric === "macro_f1" ? "macro-F1" : "accuracy";
  const series = versions.map((v, i) => ({
    version: v.model_version,
    color: seriesColor(i),
    points: v.points
      .map((p) => ({ t: Date.parse(p.t), value: Number(p[metric]), n: p.n, accuracy: p.accuracy, f1: p.macro_f1 }))
      .filter((p) => Number.isFinite(p.t) && Number.isFinite(p.value)),
  }));
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const x = (t) => pad.left + ((Math.min(end, Math.max(start, t)) - start) / Math.max(1, end - start)) * plotW;
  const y = (v) => pad.top + plotH - Math.max(0, Math.min(1, v)) * plotH;
  const timeLabel = end - start > 36 * 3600_000 ? dayClock : clock;

  const drawn = series.filter((s) => s.points.length);
  const label = drawn.length
    ? `Live ${metricName} by model version: ` +
      drawn.map((s) => `${s.version} latest ${percent(s.points[s.points.length - 1].value)}`).join("; ") +
      "."
    : `Live ${metricName}: no scored predictions in this window.`;
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "tilt-chart accuracy-chart",
    role: "img",
    "aria-label": label,
    preserveAspectRatio: "xMidYMid meet",
  });
  root.append(svg("title", {}, label));

  const grid = svg("g", { class: "chart-grid" });
  for (let v = 0; v <= 1.0001; v += 0.25) {
    grid.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }));
    grid.append(
      svg("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end", class: "chart-label" }, `${v * 100}%`),
    );
  }
  for (let i = 0; i <= 4; i += 1) {
    const t = start + ((end - start) * i) / 4;
    const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
    grid.append(svg("line", { x1: x(t), x2: x(t), y1: pad.top + plotH, y2: pad.top + plotH + 4 }));
    grid.append(
      svg("text", { x: x(t), y: height - 8, "text-anchor": anchor, class: "chart-label" }, timeLabel(t)),
    );
  }
  grid.append(
    svg("line", { x1: pad.left, x2: pad.left, y1: pad.top, y2: pad.top + plotH, class: "chart-axis" }),
  );
  root.append(grid);

  if (!drawn.length) {
    root.append(
      svg(
        "text",
        { x: pad.left + plotW / 2, y: pad.top + plotH / 2, "text-anchor": "middle", class: "chart-empty" },
        "No scored predictions in this window",
      ),
    );
    return root;
  }

  for (const s of drawn) {
    const mid = (p) => p.t + bucketMs / 2;
    const d = s.points
      .map((p, i) => {
        const joined = i > 0 && p.t - s.points[i - 1].t <= bucketMs * 1.5;
        return `${joined ? "L" : "M"}${x(mid(p)).toFixed(1)},${y(p.value).toFixed(1)}`;
      })
      .join(" ");
    const group = svg("g", { class: "accuracy-series", "data-model-version": s.version });
    group.append(svg("path", { d, class: "chart-line", fill: "none", stroke: s.color, style: `stroke: ${s.color}` }));
    for (const p of s.points) {
      const dot = svg("circle", {
        cx: x(mid(p)).toFixed(1),
        cy: y(p.value).toFixed(1),
        r: 3.5,
        fill: s.color,
        class: "chart-dot",
      });
      dot.append(
        svg(
          "title",
          {},
          `${s.version}, ${dayClock(p.t)}–${clock(p.t + bucketMs)}: accuracy ${percent(p.accuracy)}, ` +
            `macro-F1 ${percent(p.f1)} (${p.n} scored)`,
        ),
      );
      group.append(dot);
    }
    root.append(group);
  }
  return root;
}
