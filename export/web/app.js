// The page: pick radiographs (or photograph one), preprocess them as in training, run the model,
// show the probability, the label at the chosen threshold, the heatmap and the model's time.
// Nothing leaves the device: the only requests are for the site's own files, which the service
// worker serves from its cache after the first visit.
import { overlay, camHeat } from "./heatmap.js";
import { ImageError, decodeGrey, loadOpenCV, preprocess } from "./preprocess.js";
import { hasWebGPU, infer, loadModel, loadRuntime } from "./runtime.js";

const $ = (id) => document.getElementById(id);
const THRESHOLD_NAMES = {
  youden: "Youden",
  target_sensitivity: "screening",
  fixed: "fixed",
};
const params = new URLSearchParams(location.search);
const state = { models: [], loaded: null, results: [], shown: null, picked: false, labels: [] };

// What the tests (and a curious user's console) read: every result, and when the page is ready.
const api = {
  results: state.results,
  ready: null,
  loaded: () => state.loaded && describe(state.loaded),
  // Model time of `runs` calls on one fixed input after 5 warm-up calls (benchmarks/web_benchmark.py).
  benchmark: async (runs = 50) => {
    const size = state.loaded.metadata.input.size;
    const pixels = Uint8Array.from({ length: size * size }, (_, i) => (i * 7919) % 256);
    for (let i = 0; i < 5; i++) await infer(state.loaded, pixels);
    const times = [];
    for (let i = 0; i < runs; i++) times.push((await infer(state.loaded, pixels)).ms);
    return { times, ...describe(state.loaded) };
  },
  // A file's bytes (base64) -> the model input (base64) under `preprocessing` (the metadata's by default).
  preprocessBytes: async (base64, name, preprocessing) => {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const { grey, width, height } = await decodeGrey(bytes, name);
    return toBase64(await preprocess(grey, width, height, preprocessing || state.loaded.metadata.preprocessing));
  },
};
globalThis.tfFracture = api;

function setState(value, message) {
  document.body.dataset.state = value;
  if (message !== undefined) $("status").textContent = message;
}

function describe(loaded) {
  return {
    quantization: loaded.metadata.quantization,
    accelerator: loaded.accelerator,
    threads: loaded.threads,
    crossOriginIsolated: globalThis.crossOriginIsolated === true,
  };
}

function threadCount() {
  const asked = Number.parseInt(params.get("threads") || "", 10);
  if (asked >= 1) return asked;
  return globalThis.crossOriginIsolated ? Math.min(2, navigator.hardwareConcurrency || 1) : 1;
}

async function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return;
  const hadController = Boolean(navigator.serviceWorker.controller);
  try {
    await navigator.serviceWorker.register("sw.js");
  } catch (error) {
    console.warn(`No offline mode: the service worker did not register (${error})`);
    return;
  }
  // The first visit is not cross-origin isolated (a plain static server sends no COOP/COEP headers):
  // once the worker, which adds them, controls the page, reload once so LiteRT.js may use threads.
  navigator.serviceWorker.addEventListener("controllerchange", () => {
    if (!hadController && !globalThis.crossOriginIsolated && !state.picked && params.get("reload") !== "no") {
      location.reload();
    }
  });
}

function fillThresholds(metadata) {
  const select = $("threshold");
  const previous = select.value;
  select.replaceChildren();
  for (const [name, value] of Object.entries(metadata.thresholds)) {
    const option = new Option(`${THRESHOLD_NAMES[name] || name}: ${value.toFixed(3)}`, name);
    select.add(option);
  }
  select.value = metadata.thresholds[previous] !== undefined ? previous : metadata.default_threshold;
}

async function useModel(index) {
  setState("loading", "Loading the model…");
  try {
    const accelerator = $("accelerator").value;
    state.loaded = await loadModel(state.models[index], { accelerator, threads: threadCount() });
    $("accelerator").value = state.loaded.accelerator; // what it runs on, WebGPU having failed or not
    fillThresholds(state.loaded.metadata);
    const { quantization, input } = state.loaded.metadata;
    const where = state.loaded.accelerator === "webgpu" ? "GPU (WebGPU)" : `CPU, ${state.loaded.threads} thread${state.loaded.threads > 1 ? "s" : ""}`;
    setState("ready", `Ready: ${quantization} model, ${input.size} px, on the ${where}. Works offline once loaded.`);
    $("about").textContent = `Model: ${state.loaded.entry.model} (${quantization}), trained in run “${state.loaded.metadata.source_run}”.`;
    if (state.shown) show(state.shown);
  } catch (error) {
    setState("failed", `The model could not be loaded: ${error.message || error}`);
    throw error;
  }
}

function threshold() {
  const thresholds = state.loaded.metadata.thresholds;
  const name = $("threshold").value in thresholds ? $("threshold").value : state.loaded.metadata.default_threshold;
  return { name, value: thresholds[name] };
}

function labelOf(probability) {
  const { name, value } = threshold();
  const [negative, positive] = state.loaded.metadata.labels;
  return { label: probability >= value ? positive : negative, positive: probability >= value, name, value };
}

function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

async function analyse(file) {
  const started = performance.now();
  const bytes = new Uint8Array(await file.arrayBuffer());
  const { grey, width, height, warnings } = await decodeGrey(bytes, file.name);
  const pixels = await preprocess(grey, width, height, state.loaded.metadata.preprocessing);
  const prepared = performance.now();
  const output = await infer(state.loaded, pixels);
  return {
    name: file.name,
    width,
    height,
    warnings,
    pixels,
    input: toBase64(pixels),
    probability: output.probability,
    cam: output.cam,
    camShape: output.camShape,
    ms: output.ms,
    preprocessMs: prepared - started,
    model: describe(state.loaded),
  };
}

function show(result) {
  state.shown = result;
  const size = state.loaded.metadata.input.size;
  const verdict = labelOf(result.probability);
  $("result").hidden = false;
  $("probability").textContent = `${(100 * result.probability).toFixed(1)} %`;
  $("label").textContent = verdict.label;
  $("label").className = `label ${verdict.positive ? "positive" : "negative"}`;
  $("details").textContent =
    `${result.name} (${result.width} × ${result.height}) · threshold ${THRESHOLD_NAMES[verdict.name] || verdict.name} ${verdict.value.toFixed(3)}` +
    ` · model ${result.ms.toFixed(1)} ms on ${result.model.accelerator === "webgpu" ? "WebGPU" : `wasm, ${result.model.threads} thread${result.model.threads > 1 ? "s" : ""}`}` +
    ` · preprocessing ${result.preprocessMs.toFixed(0)} ms` +
    (result.warnings.length ? ` · note: ${result.warnings.join("; ")}` : "");
  const canvas = $("view");
  canvas.width = size;
  canvas.height = size;
  const heat = result.cam && $("show-heat").checked ? camHeat(result.cam, result.camShape, size) : null;
  canvas.getContext("2d").putImageData(overlay(result.pixels, heat, size), 0, 0);
  $("show-heat").disabled = !result.cam;
  $("caption").textContent = result.cam
    ? "The model's input (after CLAHE and sharpening) with its fracture heatmap."
    : "This model gives no heatmap (export it again from a classifier with a CAM head).";
}

function addRow(result) {
  $("history-section").hidden = false;
  const row = $("history").tBodies[0].insertRow(0);
  row.insertCell().textContent = result.name;
  if (result.error) {
    const cell = row.insertCell();
    cell.colSpan = 3;
    cell.textContent = result.error;
    return;
  }
  row.insertCell().textContent = `${(100 * result.probability).toFixed(1)} %`;
  const label = row.insertCell();
  label.textContent = labelOf(result.probability).label;
  state.labels.push([label, result.probability]);
  row.insertCell().textContent = `${result.ms.toFixed(1)} ms`;
  row.className = "selectable";
  row.addEventListener("click", () => show(result));
}

function report(message) {
  const line = document.createElement("p");
  line.textContent = message;
  $("errors").append(line);
}

async function onFiles(files) {
  state.picked = true; // from now on the page never reloads itself
  if (!state.loaded || files.length === 0) return;
  $("errors").replaceChildren();
  setState("busy", `Analysing ${files.length} image${files.length > 1 ? "s" : ""}…`);
  let last = null;
  let failed = 0;
  for (const file of files) {
    try {
      const result = await analyse(file);
      const { cam, pixels, ...kept } = result;
      state.results.push({ ...kept, cam: cam ? Array.from(cam) : null, label: labelOf(result.probability).label, threshold: threshold() });
      addRow(result);
      last = result;
    } catch (error) {
      failed += 1;
      const message = error instanceof ImageError ? error.message : `${file.name}: could not be analysed (${error.message || error})`;
      state.results.push({ name: file.name, error: message });
      report(message);
      addRow({ name: file.name, error: message });
    }
  }
  if (last) show(last);
  const done = files.length - failed;
  setState("ready", `${done} image${done === 1 ? "" : "s"} analysed${failed ? `, ${failed} skipped (see above)` : ""}.`);
}

async function main() {
  registerServiceWorker();
  if (!(await hasWebGPU())) {
    const option = $("accelerator").querySelector('option[value="webgpu"]');
    option.disabled = true;
    option.textContent += ": not in this browser";
  } else if (params.get("accelerator") !== "wasm") {
    $("accelerator").value = "webgpu";
  }
  const response = await fetch("models.json");
  state.models = (await response.json()).models;
  const select = $("model");
  state.models.forEach((entry, i) => select.add(new Option(`${entry.quantization} (${(entry.bytes / 1e6).toFixed(1)} MB)`, String(i))));
  const wanted = state.models.findIndex((m) => m.quantization === params.get("model"));
  select.value = String(wanted >= 0 ? wanted : 0);
  await Promise.all([loadOpenCV(), loadRuntime(threadCount())]);
  await useModel(Number(select.value));
  select.addEventListener("change", () => useModel(Number(select.value)));
  $("accelerator").addEventListener("change", () => useModel(Number(select.value)));
  $("threshold").addEventListener("change", () => {
    for (const [cell, probability] of state.labels) cell.textContent = labelOf(probability).label;
    if (state.shown) show(state.shown);
  });
  $("show-heat").addEventListener("change", () => state.shown && show(state.shown));
  for (const id of ["files", "camera"]) {
    $(id).addEventListener("change", async (event) => {
      await onFiles(Array.from(event.target.files));
      event.target.value = "";
    });
  }
}

api.ready = main().catch((error) => {
  setState("failed", `The app could not start: ${error.message || error}`);
  throw error;
});
