// Running an exported tf-fracture model with LiteRT.js: input (1, S, S, 1) float32 grey levels 0-255
// (the model scales them itself), output 0 the fracture probability, output 1 (where the model has
// one) the class activation map: one logit per cell, whose mean is the logit.
import { Tensor, isWebGPUSupported, loadAndCompile, loadLiteRt } from "./vendor/litertjs/core.js";

let runtime = null;

/** Loads LiteRT.js' WebAssembly once: the threaded build when `threads` > 1 and the page is cross-origin isolated. */
export async function loadRuntime(threads) {
  const threaded = threads > 1 && globalThis.crossOriginIsolated === true;
  if (!runtime) {
    runtime = loadLiteRt(new URL("./wasm/", document.baseURI).href, { threads: threaded }).then(() => ({ threaded }));
  }
  return runtime;
}

/** Whether this browser offers WebGPU with an adapter (headless browsers and many phones have none). */
export async function hasWebGPU() {
  try {
    if (!isWebGPUSupported() || !navigator.gpu) return false;
    return Boolean(await navigator.gpu.requestAdapter());
  } catch {
    return false;
  }
}

/**
 * Fetches and compiles one model of models.json: {model, metadata, accelerator, threads}.
 * `accelerator` "webgpu" falls back to "wasm" when the browser has no WebGPU or the model fails on it.
 */
export async function loadModel(entry, { accelerator = "wasm", threads = 1 } = {}) {
  const { threaded } = await loadRuntime(threads);
  const metadata = await (await fetch(entry.metadata)).json();
  const threadCount = threaded ? threads : 1;
  const compile = (acc) => loadAndCompile(entry.model, { accelerator: acc, cpuOptions: { numThreads: threadCount } });
  let model = null;
  let used = "wasm";
  if (accelerator === "webgpu" && (await hasWebGPU())) {
    try {
      model = await compile("webgpu");
      used = "webgpu";
    } catch (error) {
      console.warn(`WebGPU failed (${error}); running on wasm`);
    }
  }
  if (!model) model = await compile("wasm");
  const inputs = model.getInputDetails();
  const size = metadata.input.size;
  const shape = Array.from(inputs[0].shape);
  if (inputs.length !== 1 || shape.join() !== [1, size, size, 1].join() || inputs[0].dtype !== "float32") {
    throw new Error(`${entry.model}: expected one float32 input (1, ${size}, ${size}, 1), the model takes ${inputs.map((d) => `${d.dtype} (${Array.from(d.shape)})`).join(", ")}. Export it again with tf-fracture export --web.`);
  }
  return { model, metadata, accelerator: used, threads: threadCount, entry };
}

/** Runs the model on preprocessed grey levels (Uint8Array S*S): {probability, cam, camShape, ms}. */
export async function infer(loaded, pixels) {
  const size = loaded.metadata.input.size;
  const input = new Tensor(Float32Array.from(pixels), [1, size, size, 1]);
  const start = performance.now();
  let outputs;
  try {
    outputs = await loaded.model.run(input);
  } finally {
    input.delete();
  }
  try {
    const values = [];
    for (const output of outputs) values.push(await output.data());
    const ms = performance.now() - start;
    // By name, not position: the metadata's "outputs" list them as "probability" and "cam".
    const details = loaded.model.getOutputDetails();
    const index = (name, fallback) => {
      const i = details.findIndex((d) => d.name === name);
      return i >= 0 ? i : fallback;
    };
    const probability = values[index("probability", 0)][0];
    const cam = details.length > 1 ? index("cam", 1) : -1;
    const camShape = cam >= 0 ? Array.from(details[cam].shape).slice(1, 3) : null;
    return { probability, cam: cam >= 0 ? Float32Array.from(values[cam]) : null, camShape, ms };
  } finally {
    for (const output of outputs) output.delete();
  }
}
