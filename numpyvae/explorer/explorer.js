// numpyvae-explorer: explorer.js, the page. It loads model.json, the weights and the map, runs the
// model with forward.js, and draws: the decoded image of the current z, a slider per latent
// coordinate (the most used first, by KL), the test set's map (a click decodes that point), the
// line between the last two points clicked, and a drawing canvas that goes through the encoder.
//
// For tests and curious readers, window.numpyvae:
//     ready                 a Promise, resolved once the weights are loaded
//     decode(z, label)      -> Float32Array of the D pixel means, in [0, 1] (label ignored for a plain run)
//     encode(x, label)      -> {mu, logvar}, x the D pixels in [0, 1]
//     view                  what the page shows now: z(), label(), drawing(), mapPosition(i), mapPoint(i)
//
// Images are drawn dark on white, as numpyvae's figures are: a pixel of mean p is grey 255 (1 - p).
import { FORMAT, loadModel, samplePrior } from "./forward.js";

const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",     // matplotlib's C0..C9,
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];    // as numpyvae's figures colour classes
const SLIDER_RANGE = 3;          // each coordinate from -3 to 3: the prior N(0, 1) is almost all inside
const UNUSED_KL = 0.01;          // nats: a coordinate below this is not used by the model (evaluate.py's threshold)
const SNAP = 7;                  // CSS pixels: a click this close to a test point decodes that point's own mean
const STEPS = 9;                 // decoded images on the line between two points, ends included
const BRUSH = 1.1;               // the drawing brush's radius, in image pixels

const $ = (id) => document.getElementById(id);

let resolveReady, rejectReady;
const ready = new Promise((resolve, reject) => { resolveReady = resolve; rejectReady = reject; });
ready.catch(() => {});          // the page reports a failure itself; an awaiting caller still sees it
let model = null;

function needModel() {
  if (!model) throw new Error("the model is still loading: await window.numpyvae.ready first");
  return model;
}

const state = {
  z: null,            // Float64Array (Z): what the decoded image shows
  label: 0,           // the class a conditional model decodes and encodes with
  how: "z = 0",       // where z came from, for the caption
  picks: [],          // the last two points clicked on the map: [{z, x, y}]
  drawing: null,      // Float32Array (D): the drawing's pixels in [0, 1]
  drawnMu: null,      // the drawing's posterior mean, once something is drawn
};

window.numpyvae = {
  ready,
  decode: (z, label) => needModel().decode(z, label),
  encode: (x, label) => needModel().encode(x, label),
  view: {
    z: () => Array.from(state.z),
    label: () => state.label,
    drawing: () => Array.from(state.drawing),
    mapPosition: (i) => mapPosition(i),     // [x, y] of test point i in the map canvas, in CSS pixels
    mapPoint: (i) => ({ label: map.labels[i], mu: Array.from(map.mu.subarray(i * map.Z, (i + 1) * map.Z)) }),
  },
};

// -- drawing images ---------------------------------------------------------------------------------------

function paint(canvas, pixels) {
  const [, H, W] = model.inputShape;
  const context = canvas.getContext("2d"), image = context.createImageData(W, H);
  for (let i = 0; i < H * W; i++) {
    const grey = Math.round(255 * (1 - Math.min(1, Math.max(0, pixels[i]))));
    image.data.set([grey, grey, grey, 255], 4 * i);
  }
  context.putImageData(image, 0, 0);
}

function sizeImageCanvas(canvas) {
  const [, H, W] = model.inputShape;
  canvas.width = W;
  canvas.height = H;
}

// -- the decoded image and the sliders ----------------------------------------------------------------------

let manifest, order, sliders = [];

function buildSliders() {
  const kl = manifest.kl;
  order = Array.from({ length: model.latentDim }, (_, j) => j);
  if (kl) order.sort((a, b) => kl[b] - kl[a] || a - b);
  $("sliders-caption").textContent = kl
    ? `${model.latentDim} coordinates, the most used first (mean KL per test image, in nats); ` +
      `below ${UNUSED_KL} the model does not use one, and moving it changes nothing.`
    : `${model.latentDim} coordinates, in their own order (no test set, so no KL to order them by).`;
  const box = $("sliders");
  for (const j of order) {
    const label = document.createElement("label"), input = document.createElement("input");
    const output = document.createElement("output");
    label.htmlFor = input.id = `slider-${j}`;
    label.textContent = kl ? `z${j + 1} · ${kl[j].toFixed(2)}` : `z${j + 1}`;
    if (kl && kl[j] < UNUSED_KL) label.style.opacity = 0.45;
    Object.assign(input, { type: "range", min: -SLIDER_RANGE, max: SLIDER_RANGE, step: 0.01, value: 0 });
    input.addEventListener("input", () => {
      state.z[j] = Number(input.value);
      state.how = "z set with the sliders";
      show();
    });
    box.append(label, input, output);
    sliders[j] = { input, output };
  }
}

function show() {
  const pixels = model.decode(state.z, state.label);
  paint($("decoded"), pixels);
  $("decoded-caption").textContent = state.how;
  for (let j = 0; j < model.latentDim; j++) {
    const { input, output } = sliders[j], value = state.z[j];
    if (Number(input.value) !== value) input.value = value;
    output.textContent = value.toFixed(2);
  }
  drawMap();
}

function setZ(z, how, label) {
  state.z = Float64Array.from(z);
  state.how = how;
  if (label !== undefined && model.numClasses) {
    state.label = label;
    $("class").value = String(label);
  }
  show();
}

function sampleNormal() {      // Box-Muller
  const u = 1 - Math.random(), v = Math.random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

// -- the map ------------------------------------------------------------------------------------------

const map = { count: 0, Z: 0, labels: [], xy: [], mu: null, box: null };

async function loadMap() {
  const about = manifest.map;
  if (!about.count) {
    $("map-caption").textContent = `No map: ${about.missing}.`;
    return;
  }
  const bytes = await fetchBytes(about.file);
  const Z = model.latentDim, view = new DataView(bytes);
  if (bytes.byteLength !== 4 * about.count * Z) throw new Error(`${about.file} does not hold ${about.count} x ${Z} floats`);
  map.mu = new Float32Array(about.count * Z);
  for (let i = 0; i < map.mu.length; i++) map.mu[i] = view.getFloat32(4 * i, true);
  Object.assign(map, { count: about.count, Z, labels: about.labels, xy: about.xy });
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const [x, y] of map.xy) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  const pad = 0.05 * Math.max(x1 - x0, y1 - y0, 1e-6);
  map.box = { x0: x0 - pad, x1: x1 + pad, y0: y0 - pad, y1: y1 + pad };
  $("map-caption").textContent = `${about.about}. A click decodes that point; on a test point, its own mean.`;
  const names = manifest.class_names;
  const seen = new Set(map.labels);
  for (const c of [...seen].sort((a, b) => a - b)) {
    const item = document.createElement("span");
    item.textContent = names[c] ?? `class ${c}`;
    item.style.setProperty("--dot", COLOURS[c % COLOURS.length]);
    $("legend").append(item);
  }
}

function mapCanvasScale() {    // canvas pixels per CSS pixel
  const canvas = $("map");
  return canvas.width / canvas.getBoundingClientRect().width;
}

function toCanvas(x, y) {
  const canvas = $("map"), b = map.box;
  return [(x - b.x0) / (b.x1 - b.x0) * canvas.width, (1 - (y - b.y0) / (b.y1 - b.y0)) * canvas.height];
}

function fromCanvas(px, py) {
  const canvas = $("map"), b = map.box;
  return [b.x0 + px / canvas.width * (b.x1 - b.x0), b.y0 + (1 - py / canvas.height) * (b.y1 - b.y0)];
}

function mapPosition(i) {
  const [px, py] = toCanvas(...map.xy[i]), scale = mapCanvasScale();
  return [px / scale, py / scale];
}

// z's place on the map's plane: xy = (z - mean) axes^T
function project(z) {
  const { mean, axes } = manifest.map;
  return [0, 1].map((r) => z.reduce((sum, v, j) => sum + (v - mean[j]) * axes[r][j], 0));
}

// the point of the map's plane at xy: z = mean + xy axes
function unproject(x, y) {
  const { mean, axes } = manifest.map;
  return mean.map((m, j) => m + x * axes[0][j] + y * axes[1][j]);
}

function marker(context, [x, y], colour, shape) {
  context.save();
  context.strokeStyle = colour;
  context.lineWidth = 2.5;
  context.beginPath();
  if (shape === "ring") context.arc(x, y, 8, 0, 2 * Math.PI);
  else context.rect(x - 6, y - 6, 12, 12);
  context.stroke();
  context.restore();
}

function drawMap() {
  if (!map.count) return;
  const canvas = $("map"), context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.globalAlpha = 0.55;
  for (let i = 0; i < map.count; i++) {
    const [x, y] = toCanvas(...map.xy[i]);
    context.fillStyle = COLOURS[map.labels[i] % COLOURS.length];
    context.beginPath();
    context.arc(x, y, 2.2, 0, 2 * Math.PI);
    context.fill();
  }
  context.globalAlpha = 1;
  if (state.picks.length === 2) {
    const [a, b] = state.picks.map((p) => toCanvas(p.x, p.y));
    context.strokeStyle = "#333";
    context.setLineDash([4, 4]);
    context.beginPath();
    context.moveTo(...a);
    context.lineTo(...b);
    context.stroke();
    context.setLineDash([]);
    context.font = "bold 13px sans-serif";
    context.fillStyle = "#333";
    context.fillText("A", a[0] + 9, a[1] - 9);
    context.fillText("B", b[0] + 9, b[1] - 9);
  }
  if (state.drawnMu) marker(context, toCanvas(...project(state.drawnMu)), "#2f6fde", "square");
  marker(context, toCanvas(...project(state.z)), "#111", "ring");
}

function clickMap(event) {
  if (!map.count) return;
  const scale = mapCanvasScale(), rect = $("map").getBoundingClientRect();
  const px = (event.clientX - rect.left) * scale, py = (event.clientY - rect.top) * scale;
  let nearest = -1, best = (SNAP * scale) ** 2;
  for (let i = 0; i < map.count; i++) {
    const [x, y] = toCanvas(...map.xy[i]), d = (x - px) ** 2 + (y - py) ** 2;
    if (d < best) { best = d; nearest = i; }
  }
  let z, x, y, how, label;
  if (nearest >= 0) {
    z = map.mu.subarray(nearest * map.Z, (nearest + 1) * map.Z);
    [x, y] = map.xy[nearest];
    label = map.labels[nearest];
    const name = manifest.class_names[label] ?? `class ${label}`;
    how = `z = the mean of test image ${nearest + 1}, a ${name}`;
  } else {
    [x, y] = fromCanvas(px, py);
    z = unproject(x, y);
    how = `z = the map's point (${x.toFixed(2)}, ${y.toFixed(2)})`;
  }
  state.picks = [...state.picks, { z: Float64Array.from(z), x, y }].slice(-2);
  setZ(z, how, model.numClasses && label !== undefined ? label : undefined);
  showInterpolation();
}

function between(t) {
  const [a, b] = state.picks;
  return a.z.map((v, j) => (1 - t) * v + t * b.z[j]);
}

function showInterpolation() {
  const box = $("interpolation");
  if (state.picks.length < 2) {
    box.textContent = "Click two points on the map.";
    return;
  }
  box.textContent = "";
  for (let s = 0; s < STEPS; s++) {
    const t = s / (STEPS - 1), canvas = document.createElement("canvas");
    sizeImageCanvas(canvas);
    canvas.title = `t = ${t.toFixed(2)}`;
    paint(canvas, model.decode(between(t), state.label));
    canvas.addEventListener("click", () => { $("t").value = t; moveT(); });
    box.append(canvas);
  }
}

function moveT() {
  if (state.picks.length < 2) return;
  const t = Number($("t").value);
  $("t-value").textContent = t.toFixed(2);
  setZ(between(t), `z = (1 - t) A + t B, t = ${t.toFixed(2)}`);
}

// -- the drawing canvas and the encoder -------------------------------------------------------------------

function ink(x, y) {           // add a soft round dab of ink centred at (x, y), in image pixels
  const [, H, W] = model.inputShape;
  for (let i = Math.max(0, Math.floor(y - 2 * BRUSH)); i <= Math.min(H - 1, Math.ceil(y + 2 * BRUSH)); i++) {
    for (let j = Math.max(0, Math.floor(x - 2 * BRUSH)); j <= Math.min(W - 1, Math.ceil(x + 2 * BRUSH)); j++) {
      const d2 = (j + 0.5 - x) ** 2 + (i + 0.5 - y) ** 2;
      const value = Math.exp(-d2 / (2 * BRUSH * BRUSH));
      state.drawing[i * W + j] = Math.max(state.drawing[i * W + j], value);
    }
  }
}

function encodeDrawing() {
  paint($("drawing"), state.drawing);
  const blank = state.drawing.every((v) => v === 0);
  const { mu, logvar } = model.encode(state.drawing, state.label);
  state.drawnMu = blank ? null : mu;
  paint($("reconstruction"), model.decode(mu, state.label));
  drawPosterior(mu, logvar);
  drawMap();
}

function drawPosterior(mu, logvar) {
  const canvas = $("posterior"), Z = model.latentDim;
  const row = Math.max(10, Math.min(15, Math.floor(300 / Z))), left = 46, right = canvas.width - 12;
  canvas.height = row * Z + 22;
  canvas.style.height = `${canvas.height}px`;
  const context = canvas.getContext("2d");
  const x = (v) => left + (Math.max(-SLIDER_RANGE, Math.min(SLIDER_RANGE, v)) + SLIDER_RANGE) / (2 * SLIDER_RANGE) * (right - left);
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.font = "11px sans-serif";
  context.fillStyle = "#5b6475";
  context.textAlign = "center";
  for (const tick of [-3, -2, -1, 0, 1, 2, 3]) {
    context.fillRect(x(tick), 0, tick === 0 ? 1 : 0.5, row * Z);
    context.fillText(String(tick), x(tick), row * Z + 14);
  }
  context.textAlign = "right";
  order.forEach((j, r) => {
    const y = r * row + row / 2, sigma = Math.exp(0.5 * logvar[j]);
    context.fillStyle = "#5b6475";
    context.fillText(`z${j + 1}`, left - 6, y + 4);
    context.fillStyle = "rgba(47, 111, 222, 0.28)";
    context.fillRect(x(mu[j] - sigma), y - row * 0.3, x(mu[j] + sigma) - x(mu[j] - sigma), row * 0.6);
    context.fillStyle = "#2f6fde";
    context.beginPath();
    context.arc(x(mu[j]), y, 3, 0, 2 * Math.PI);
    context.fill();
  });
}

function setUpDrawing() {
  const canvas = $("drawing");
  let last = null;
  const at = (event) => {
    const rect = canvas.getBoundingClientRect(), [, H, W] = model.inputShape;
    return [(event.clientX - rect.left) / rect.width * W, (event.clientY - rect.top) / rect.height * H];
  };
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    last = at(event);
    ink(...last);
    encodeDrawing();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const next = at(event), steps = Math.ceil(Math.hypot(next[0] - last[0], next[1] - last[1]) / 0.25);
    for (let s = 1; s <= steps; s++) ink(last[0] + (next[0] - last[0]) * s / steps, last[1] + (next[1] - last[1]) * s / steps);
    last = next;
    encodeDrawing();
  });
  const stop = () => { last = null; };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  $("clear").addEventListener("click", () => { state.drawing.fill(0); encodeDrawing(); });
  $("use-code").addEventListener("click", () => {
    if (state.drawnMu) setZ(state.drawnMu, "z = \u03bc of your drawing");
  });
}

// -- loading ------------------------------------------------------------------------------------------

async function fetchBytes(name) {
  const response = await fetch(name);
  if (!response.ok) throw new Error(`${name}: ${response.status} ${response.statusText}`);
  return response.arrayBuffer();
}

async function start() {
  if (location.protocol === "file:") {
    throw new Error("a browser loads no model from a file:// page: serve this folder, e.g. with " +
                    "`numpyvae explore RUN_DIR --out DIR --serve`, or `python -m http.server` inside it");
  }
  const response = await fetch("model.json");
  if (!response.ok) throw new Error(`model.json: ${response.status} ${response.statusText}`);
  manifest = await response.json();
  if (manifest.format !== FORMAT) throw new Error("model.json was not written by numpyvae explore");
  model = loadModel(manifest, await fetchBytes(manifest.weights.file));
  $("title").textContent = `${manifest.title}, ${manifest.likelihood.name} likelihood` +
                           (manifest.about ? `: ${manifest.about}` : "");
  for (const canvas of [$("decoded"), $("drawing"), $("reconstruction")]) sizeImageCanvas(canvas);
  state.z = new Float64Array(model.latentDim);
  state.drawing = new Float32Array(model.pixels);
  if (model.numClasses) {
    const select = $("class");
    manifest.class_names.slice(0, model.numClasses).forEach((name, c) => select.add(new Option(name, String(c))));
    select.addEventListener("change", () => {
      state.label = Number(select.value);
      show();
      showInterpolation();
      encodeDrawing();
    });
    $("class-row").hidden = false;
  }
  buildSliders();
  await loadMap();
  $("map").addEventListener("click", clickMap);
  $("zero").addEventListener("click", () => setZ(new Float64Array(model.latentDim), "z = 0"));
  const prior = manifest.prior;
  $("sample").addEventListener("click", () => setZ(samplePrior(prior, sampleNormal, Math.random),
                                                   `z drawn from the prior, ${prior.description}`));
  $("t").addEventListener("input", moveT);
  setUpDrawing();
  show();
  showInterpolation();
  encodeDrawing();
}

start().then(() => resolveReady(window.numpyvae), (error) => {
  const problem = $("problem");
  problem.textContent = `The explorer cannot start: ${error.message}`;
  problem.hidden = false;
  $("title").textContent = "";
  rejectReady(error);
});
