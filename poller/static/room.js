// The room at a glance: draws /api/room as a plan of each room and keeps it live.
//
// Every string from a device (target names, sensor names, error messages) is placed with
// textContent or setAttribute, never parsed as markup.

const SVG_NS = "http://www.w3.org/2000/svg";
const app = document.getElementById("app");
const freshness = document.getElementById("freshness");
const REFRESH_MS = Number(app.dataset.refresh || "5") * 1000;
// A page whose data is older than this many refresh periods says so loudly.
const STALE_PERIODS = 3;

let data = JSON.parse(app.dataset.initial);
app.removeAttribute("data-initial"); // read once; later data comes from /api/room
let receivedAt = performance.now(); // when `data` arrived (page load or last fetch)
let lastError = "";
let refreshes = 0;

const LABELS = {
  ok: "ok",
  warning: "warning",
  critical: "critical",
  leak: "LEAK",
  unknown: "unknown",
};

function html(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// SVG text does not wrap or ellipsise: shorten long device strings, full text in a <title>.
function label(x, y, text, cls, max) {
  const node = svg("text", { x, y, class: cls });
  node.textContent = text.length > max ? text.slice(0, max - 1) + "\u2026" : text;
  if (text.length > max) node.append(svg("title", {}, text));
  return node;
}

// Where the full text matters (a leak sensor's name says where the water is), break it
// into lines instead: at spaces, measured in the page's own font on a canvas (which needs
// no layout), and a word wider than a line by characters. A line broken at a space keeps
// it at its end, so that the lines joined are the text again.
const measure = document.createElement("canvas").getContext("2d");

function wrapLines(text, width, font) {
  measure.font = font;
  const fits = (s) => measure.measureText(s.trimEnd()).width <= width;
  const lines = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (fits(line + word)) {
      line += word + " ";
      continue;
    }
    if (line) lines.push(line);
    line = word;
    while (line.length > 1 && !fits(line)) {
      let cut = line.length - 1;
      while (cut > 1 && !fits(line.slice(0, cut))) cut -= 1;
      lines.push(line.slice(0, cut));
      line = line.slice(cut);
    }
    line += " ";
  }
  lines.push(line.slice(0, -1)); // the text did not end with the space added here
  return lines;
}

// A <text> of the wrapped lines, one <tspan> each `lineHeight` px apart; returns it and its
// number of lines.
function wrapped(x, y, text, { cls, width, size, bold, lineHeight }) {
  const family = getComputedStyle(document.body).fontFamily;
  const lines = wrapLines(text, width, `${bold ? "bold " : ""}${size}px ${family}`);
  const node = svg("text", { x, y, class: cls });
  lines.forEach((line, i) => node.append(svg("tspan", { x, dy: i ? lineHeight : 0 }, line)));
  return [node, lines.length];
}

const fmt = {
  celsius: (v) => (v === null || v === undefined ? "\u2013" : `${v.toFixed(1)} \u00b0C`),
  humidity: (v) => (v === null || v === undefined ? "\u2013" : `${Math.round(v * 100)} %RH`),
  percent: (v) => (v === null || v === undefined ? "\u2013" : `${Math.round(v * 100)} %`),
  minutes: (s) => (s === null || s === undefined ? "\u2013" : `${Math.round(s / 60)} min`),
};

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

function elapsed() {
  return (performance.now() - receivedAt) / 1000;
}

// An element showing "N s ago" that the clock keeps current between refreshes.
function ageNode(tag, seconds) {
  const node = html(tag, { class: "age" }, ago(seconds));
  if (seconds !== null && seconds !== undefined) node.dataset.age = String(seconds);
  return node;
}

function badge(state) {
  return html("span", { class: `badge s-${state}`, "data-state": state }, LABELS[state] || state);
}

// --- the plan ---------------------------------------------------------------------------

const RACK_W = 210;
const GAP = 28;
const MARGIN = 16;
const HEAD_H = 92;
const SLOT_H = 30;
// A leak sensor: its rope, its name's first baseline 6 px under it, further lines LEAK_LINE
// px apart, then a gap.
const LEAK_ROPE = 16;
const LEAK_LINE = 13;
const LEAK_GAP = 6;
const LEAK_FONT = 11; // px, as .leak-name in room.css
const UNIT_W = 190;

// What a device's slot says on its right: its inlet, or for a UPS its source and charge.
function slotValue(device, ups) {
  if (device.answer !== "up") return device.answer;
  if (ups) {
    const source = ups.source === "utility" ? "mains" : ups.source || "?";
    return `${source} \u00b7 ${fmt.percent(ups.charge)}`;
  }
  return device.inlet ? fmt.celsius(device.inlet.celsius) : device.kind;
}

function slot(device, ups, x, y) {
  const g = svg("g", {
    class: `slot s-${device.state}`,
    "data-device": device.name,
    "data-state": device.state,
    "data-answer": device.answer,
  });
  g.append(svg("rect", { x, y, width: RACK_W - 16, height: SLOT_H - 4, rx: 3 }));
  g.append(label(x + 8, y + 17, device.name, "slot-name", 17));
  const value = svg("text", { x: x + RACK_W - 24, y: y + 17, class: "slot-value" });
  value.textContent = slotValue(device, ups);
  g.append(value);
  const why = device.answer === "up" ? device.kind : `${device.answer} ${device.reason}`.trim();
  g.append(svg("title", {}, `${device.name} (${why})`));
  return g;
}

// A leak sensor drawn as a line: dry dashed, wet a blue wave, named in full (which device
// and which of its sensors: three BMCs' "ChassisFloor" are three different places).
function leakLine(leak, x, y, width) {
  const g = svg("g", {
    class: leak.wet ? "leak wet" : "leak dry",
    "data-device": leak.device,
    "data-sensor": leak.sensor,
    "data-wet": String(leak.wet),
  });
  if (leak.wet) {
    let d = `M ${x} ${y + 8}`;
    for (let i = x; i + 12 <= x + width; i += 12) d += ` q 3 -6 6 0 t 6 0`;
    g.append(svg("path", { d, class: "rope" }));
  } else {
    g.append(svg("line", { x1: x, y1: y + 8, x2: x + width, y2: y + 8, class: "rope" }));
  }
  const text = `${leak.wet ? "WET" : "dry"} \u00b7 ${leak.device}: ${leak.sensor}`;
  const [name, lines] = wrapped(x, y + LEAK_ROPE + 6, text, {
    cls: "leak-name",
    width,
    size: LEAK_FONT,
    bold: leak.wet,
    lineHeight: LEAK_LINE,
  });
  g.append(name);
  return [g, LEAK_ROPE + 6 + (lines - 1) * LEAK_LINE + LEAK_GAP];
}

function rackGroup(rack, ups, x, y, height) {
  const g = svg("g", { class: `rack s-${rack.state}`, "data-rack": rack.name, "data-state": rack.state });
  g.append(svg("rect", { x, y, width: RACK_W, height, rx: 6, class: "rack-box" }));
  g.append(label(x + 10, y + 22, `Rack ${rack.name}`, "rack-name", 18));
  g.append(svg("text", { x: x + RACK_W - 10, y: y + 22, class: "rack-state" }, LABELS[rack.state]));
  const inlet = svg("text", { x: x + 10, y: y + 54, class: `inlet s-${rack.inlet ? rack.inlet.state : "unknown"}` });
  inlet.textContent = rack.inlet ? fmt.celsius(rack.inlet.celsius) : "\u2013 \u00b0C";
  const inletGroup = svg("g", { class: "inlet-group" });
  if (rack.inlet) {
    inlet.dataset.celsius = String(rack.inlet.celsius);
    const limits = rack.inlet.own_limits ? "device limits" : "default limits";
    inletGroup.append(svg("title", {}, `hottest inlet: ${rack.inlet.device} ${rack.inlet.sensor}; ` +
      `warning ${rack.inlet.warning} \u00b0C, critical ${rack.inlet.critical} \u00b0C (${limits})`));
  }
  inletGroup.append(inlet);
  g.append(inletGroup);
  g.append(svg("text", { x: x + 10, y: y + 74, class: "rack-sub" },
    `inlet max${rack.humidity === null ? "" : " \u00b7 " + fmt.humidity(rack.humidity)}`));
  rack.devices.forEach((device, i) => {
    g.append(slot(device, ups.get(device.name), x + 8, y + HEAD_H + i * SLOT_H));
  });
  let bottom = y + height + 10;
  for (const leak of rack.leaks) {
    const [line, h] = leakLine(leak, x, bottom, RACK_W);
    g.append(line);
    bottom += h;
  }
  return [g, bottom];
}

function unitGroup(device, cooling, x, y) {
  const lines = [];
  if (cooling) {
    lines.push(`supply ${fmt.celsius(cooling.supply_celsius)}`);
    lines.push(`return ${fmt.celsius(cooling.return_celsius)}`);
    if (cooling.humidity !== null) lines.push(fmt.humidity(cooling.humidity));
  } else if (device.inlet) {
    lines.push(`inlet ${fmt.celsius(device.inlet.celsius)}`);
  }
  if (device.answer !== "up") lines.push(`${device.answer} ${device.reason}`.trim());
  const height = 40 + lines.length * 18;
  const g = svg("g", {
    class: `unit s-${device.state}`,
    "data-device": device.name,
    "data-state": device.state,
    "data-answer": device.answer,
  });
  g.append(svg("rect", { x, y, width: UNIT_W, height, rx: 6, class: "rack-box" }));
  g.append(label(x + 10, y + 22, device.name, "rack-name", 16));
  // Its state as the model words it (device.label): "failed" for a CRAC whose alarms say
  // cooling failed, never its kind in red.
  g.append(svg("text", { x: x + UNIT_W - 10, y: y + 22, class: "rack-state" },
    LABELS[device.label] || device.label));
  lines.forEach((line, i) => g.append(svg("text", { x: x + 10, y: y + 44 + i * 18, class: "rack-sub" }, line)));
  return [g, height];
}

function plan(room) {
  const most = Math.max(1, ...room.racks.map((r) => r.devices.length));
  const rackH = HEAD_H + most * SLOT_H + 6;
  let width = MARGIN + room.racks.length * (RACK_W + GAP);
  const node = svg("svg", { class: "plan", role: "img" });
  node.append(svg("title", {}, `plan of ${room.site} ${room.room}`));
  const ups = new Map(room.ups.map((u) => [u.device, u]));
  let leaksEnd = MARGIN + rackH;
  room.racks.forEach((rack, i) => {
    const [g, bottom] = rackGroup(rack, ups, MARGIN + i * (RACK_W + GAP), MARGIN, rackH);
    node.append(g);
    leaksEnd = Math.max(leaksEnd, bottom);
  });
  let unitY = MARGIN;
  const coolingByDevice = new Map(room.cooling.map((c) => [c.device, c]));
  for (const device of room.unracked) {
    const [g, h] = unitGroup(device, coolingByDevice.get(device.name), width, unitY);
    node.append(g);
    unitY += h + 12;
  }
  if (room.unracked.length) width += UNIT_W + GAP;
  let height = Math.max(leaksEnd + 4, unitY) + 6;
  // Leak sensors on the room's floor (a CRAC's under-floor sensor) run along the room.
  for (const leak of room.floor_leaks) {
    const [line, h] = leakLine(leak, MARGIN, height, Math.max(width - MARGIN - GAP, 200));
    node.append(line);
    height += h;
  }
  height += MARGIN;
  width = Math.max(width, 260);
  node.setAttribute("viewBox", `0 0 ${width} ${height}`);
  node.setAttribute("width", String(width));
  node.setAttribute("height", String(height));
  return node;
}

// --- beside the plan --------------------------------------------------------------------

function card(title, state) {
  const node = html("div", { class: `card s-${state}` });
  const head = html("h3", {}, title + " ");
  head.append(badge(state));
  node.append(head);
  return node;
}

function row(table, name, value) {
  const tr = html("tr");
  tr.append(html("th", {}, name), html("td", {}, value));
  table.append(tr);
}

function powerCards(room) {
  return room.ups.map((ups) => {
    const node = card(`UPS ${ups.device}`, ups.state);
    node.classList.add("ups");
    node.dataset.device = ups.device;
    const table = html("table");
    const source = ups.source === null ? "\u2013" : ups.source === "utility" ? "mains (utility)" : ups.source;
    row(table, "power source", source);
    row(table, "battery charge", fmt.percent(ups.charge));
    row(table, "runtime", fmt.minutes(ups.runtime_seconds));
    row(table, "load", fmt.percent(ups.load));
    table.rows[0].dataset.source = ups.source || "";
    node.append(table);
    return node;
  });
}

function coolingCards(room) {
  return room.cooling.map((unit) => {
    const node = card(`Cooling ${unit.device}`, unit.state);
    node.classList.add("cooling");
    node.dataset.device = unit.device;
    const table = html("table");
    row(table, "supply air", fmt.celsius(unit.supply_celsius));
    row(table, "return air", fmt.celsius(unit.return_celsius));
    for (const alarm of unit.alarms) {
      const tr = html("tr", { class: `s-${alarm.state === "failed" ? "critical" : alarm.state === "degraded" ? "warning" : "ok"}` });
      tr.append(html("th", {}, alarm.sensor), html("td", {}, alarm.state));
      table.append(tr);
    }
    node.append(table);
    return node;
  });
}

function problemList(problems) {
  const node = html("div", { class: "card problems" });
  node.append(html("h3", {}, `What is wrong now (${problems.length})`));
  if (!problems.length) {
    node.append(html("p", { class: "quiet" }, "Nothing: every device answers and reads within its limits."));
    return node;
  }
  const list = html("ol");
  for (const p of problems) {
    const li = html("li", { class: `s-${p.severity}`, "data-severity": p.severity });
    li.append(badge(p.severity));
    const where = p.rack ? ` (rack ${p.rack})` : "";
    li.append(html("b", {}, ` ${p.device}${where}`));
    li.append(document.createTextNode(p.sensor ? ` ${p.sensor}: ${p.text}` : `: ${p.text}`));
    list.append(li);
  }
  node.append(list);
  return node;
}

function deviceTable(devices) {
  const node = html("div", { class: "card devices" });
  node.append(html("h3", {}, "Last answered"));
  const table = html("table");
  for (const d of devices) {
    const tr = html("tr", { class: `s-${d.state}`, "data-device": d.name, "data-answer": d.answer });
    tr.append(html("th", {}, d.name));
    tr.append(html("td", {}, d.rack ? `rack ${d.rack}` : "room"));
    tr.append(html("td", {}, d.answer === "down" ? `down: ${d.reason}` : d.answer));
    tr.append(ageNode("td", d.last_success_age));
    if (d.message) tr.title = d.message;
    table.append(tr);
  }
  node.append(table);
  return node;
}

function roomSection(room) {
  const section = html("section", {
    class: `room s-${room.state}`,
    "data-site": room.site,
    "data-room": room.room,
    "data-state": room.state,
  });
  const head = html("h2", {}, `${room.site || "(no site)"} \u00b7 ${room.room || "(no room)"} `);
  head.append(badge(room.state));
  section.append(head);
  const body = html("div", { class: "room-body" });
  const picture = html("div", { class: "picture" });
  picture.append(room.racks.length || room.unracked.length ? plan(room) : html("p", {}, "no devices"));
  const side = html("div", { class: "side" });
  side.append(...powerCards(room), ...coolingCards(room));
  const here = data.problems.filter((p) => p.site === room.site && p.room === room.room);
  side.append(problemList(here));
  const devices = [...room.racks.flatMap((r) => r.devices), ...room.unracked];
  devices.sort((a, b) => a.name.localeCompare(b.name));
  side.append(deviceTable(devices));
  body.append(picture, side);
  section.append(body);
  return section;
}

function render() {
  app.replaceChildren(...data.rooms.map(roomSection));
  if (!data.rooms.length) app.append(html("p", {}, "No targets are configured."));
  app.dataset.state = data.state;
  app.dataset.refreshes = String(refreshes);
  tick();
}

// --- live -------------------------------------------------------------------------------

function tick() {
  const age = elapsed();
  for (const node of app.querySelectorAll(".age[data-age]")) {
    node.textContent = ago(Number(node.dataset.age) + age);
  }
  const stale = age * 1000 > STALE_PERIODS * REFRESH_MS;
  freshness.dataset.stale = String(stale);
  const when = new Date(data.generated_at * 1000).toLocaleTimeString();
  let text = `Data from ${when} (${ago(age)}), refreshed every ${REFRESH_MS / 1000} s.`;
  if (lastError) text = `Cannot reach hwpoller (${lastError}). ` + text;
  if (stale) text = "STALE: " + text;
  freshness.textContent = text;
}

async function refresh() {
  try {
    const response = await fetch("api/room", {
      cache: "no-store",
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    data = await response.json();
    receivedAt = performance.now();
    lastError = "";
    refreshes += 1;
    render();
  } catch (error) {
    lastError = error instanceof Error ? error.message : String(error);
    tick();
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

render();
setInterval(tick, 1000);
setTimeout(refresh, REFRESH_MS);
