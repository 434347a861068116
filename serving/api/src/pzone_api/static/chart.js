// A small hand-drawn SVG line chart of one device's tilt over time (no chart library).

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
