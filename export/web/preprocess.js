// Reading an image file and preprocessing it exactly as tf-fracture does in training
// (tf_fracture/data/io.py and tf_fracture/data/preprocess.py), with OpenCV.js:
//   grey = the file's grey levels (colour: OpenCV's BT.601 luma)
//   resize to S x S (INTER_AREA on an axis that shrinks, INTER_LINEAR on one that grows; "pad" first
//   pads to a centred square with 0), CLAHE (clip limit, grid), then unsharp masking in float32:
//   rint(clip(img + amount * (img - GaussianBlur(img, (k, k), 0)))), borders BORDER_REFLECT_101.

export class ImageError extends Error {
  constructor(name, reason) {
    super(`${name}: ${reason}`);
    this.file = name;
    this.reason = reason;
  }
}

let loading = null;

/** OpenCV.js, once its WebAssembly is ready (the page loads vendor/opencv.js as a classic script). */
export function loadOpenCV() {
  loading ??= load();
  return loading;
}

async function load() {
  if (!globalThis.cv) {
    await new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = new URL("./vendor/opencv.js", document.baseURI).href;
      script.onload = resolve;
      script.onerror = () => reject(new Error("vendor/opencv.js did not load: rebuild the site with tf-fracture export --web."));
      document.head.append(script);
    });
  }
  let cv = globalThis.cv;
  if (typeof cv.then === "function") cv = await cv;
  if (!cv.Mat) await new Promise((resolve) => { cv.onRuntimeInitialized = resolve; });
  return cv;
}

/** "PNG", "JPEG" or null, from the file's first bytes. */
export function sniff(bytes) {
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (bytes.length >= 8 && png.every((b, i) => bytes[i] === b)) return "PNG";
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "JPEG";
  return null;
}

/** Whether a JPEG's data reaches its end-of-image marker (FF D9 after the first start-of-scan, FF DA). */
export function jpegComplete(bytes) {
  let scan = -1;
  for (let i = 2; i + 1 < bytes.length; i++) {
    if (bytes[i] !== 0xff) continue;
    if (scan < 0 && bytes[i + 1] === 0xda) scan = i;
    else if (scan >= 0 && bytes[i + 1] === 0xd9) return true;
  }
  return false;
}

/** The JPEG without its APP1 "Exif" segments (the markers before the first start-of-scan are walked). */
export function withoutExif(bytes) {
  const kept = [bytes.subarray(0, 2)];
  let offset = 2;
  while (offset + 4 <= bytes.length && bytes[offset] === 0xff) {
    const marker = bytes[offset + 1];
    if (marker === 0xda || marker === 0xd9) break; // start of scan: the rest is image data
    const length = (bytes[offset + 2] << 8) | bytes[offset + 3];
    const end = offset + 2 + length;
    const exif = marker === 0xe1 && String.fromCharCode(...bytes.subarray(offset + 4, offset + 8)) === "Exif";
    if (!exif) kept.push(bytes.subarray(offset, end));
    offset = end;
  }
  if (offset === 2) return bytes;
  kept.push(bytes.subarray(offset));
  const out = new Uint8Array(kept.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of kept) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** A PNG's chunks, walked to IEND: {complete, bitDepth}. */
export function pngChunks(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 8;
  let bitDepth = null;
  while (offset + 8 <= bytes.length) {
    const length = view.getUint32(offset);
    const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
    if (type === "IHDR" && offset + 17 <= bytes.length) bitDepth = bytes[offset + 16];
    if (offset + 12 + length > bytes.length) break;
    if (type === "IEND") return { complete: true, bitDepth };
    offset += 12 + length;
  }
  return { complete: false, bitDepth };
}

/**
 * The file's grey levels: {grey: Uint8Array (H*W), width, height, warnings: [..]}.
 * Throws ImageError naming the file and the problem (not an image, truncated, undecodable).
 */
export async function decodeGrey(bytes, name) {
  const kind = sniff(bytes);
  const warnings = [];
  if (!kind) throw new ImageError(name, "not a PNG or JPEG image (the app reads PNG and JPEG radiographs)");
  if (kind === "JPEG" && !jpegComplete(bytes)) {
    throw new ImageError(name, "truncated JPEG: the file ends before the image does (no end-of-image marker)");
  }
  if (kind === "PNG") {
    const { complete, bitDepth } = pngChunks(bytes);
    if (!complete) throw new ImageError(name, "truncated PNG: the file ends before its last chunk (IEND)");
    if (bitDepth === 16) {
      warnings.push("16-bit PNG: the browser reduces it to 8 bits by its own rule, tf-fracture stretches it to 0-255; answers may differ from tf-fracture predict");
    }
  }
  let bitmap;
  try {
    // Chromium applies a JPEG's EXIF orientation whatever `imageOrientation` says; tf-fracture (OpenCV's
    // IMREAD_UNCHANGED) ignores it, so the EXIF segments go before decoding.
    if (kind === "JPEG") bytes = withoutExif(bytes);
    bitmap = await createImageBitmap(new Blob([bytes], { type: kind === "PNG" ? "image/png" : "image/jpeg" }), {
      colorSpaceConversion: "none",
      premultiplyAlpha: "none",
      imageOrientation: "none",
    });
  } catch (error) {
    throw new ImageError(name, `corrupt ${kind} data: the browser cannot decode it`);
  }
  const { width, height } = bitmap;
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true, colorSpace: "srgb" });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = context.getImageData(0, 0, width, height, { colorSpace: "srgb" }).data;
  const grey = new Uint8Array(width * height);
  let colour = false;
  for (let i = 0, j = 0; j < grey.length; i += 4, j++) {
    if (rgba[i] !== rgba[i + 1] || rgba[i] !== rgba[i + 2]) { colour = true; break; }
    grey[j] = rgba[i];
  }
  if (colour) {
    const cv = await loadOpenCV();
    const src = cv.matFromArray(height, width, cv.CV_8UC4, rgba);
    const dst = new cv.Mat();
    cv.cvtColor(src, dst, cv.COLOR_RGBA2GRAY);
    grey.set(dst.data);
    src.delete();
    dst.delete();
  }
  return { grey, width, height, warnings };
}

function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : r;
}

/** The model's input: `preprocessing` (the metadata's) applied to grey levels, a Uint8Array of S*S. */
export async function preprocess(grey, width, height, preprocessing) {
  const cv = await loadOpenCV();
  const size = preprocessing.image_size;
  const mats = [];
  const mat = (m) => { mats.push(m); return m; };
  try {
    let image = mat(cv.matFromArray(height, width, cv.CV_8UC1, grey));
    if (preprocessing.resize_mode === "pad") {
      const side = Math.max(height, width);
      const top = Math.floor((side - height) / 2);
      const left = Math.floor((side - width) / 2);
      const padded = mat(new cv.Mat());
      cv.copyMakeBorder(image, padded, top, side - height - top, left, side - width - left, cv.BORDER_CONSTANT, new cv.Scalar(0));
      image = padded;
    }
    const interpolation = (shrink) => (shrink ? cv.INTER_AREA : cv.INTER_LINEAR);
    const shrinkH = size < image.rows;
    const shrinkW = size < image.cols;
    if (shrinkH !== shrinkW) {
      const tall = mat(new cv.Mat());
      cv.resize(image, tall, new cv.Size(image.cols, size), 0, 0, interpolation(shrinkH));
      image = tall;
    }
    const resized = mat(new cv.Mat());
    cv.resize(image, resized, new cv.Size(size, size), 0, 0, interpolation(shrinkH === shrinkW ? shrinkH : shrinkW));
    const equalised = mat(new cv.Mat());
    const clahe = new cv.CLAHE(preprocessing.clahe_clip_limit, new cv.Size(preprocessing.clahe_grid, preprocessing.clahe_grid));
    clahe.apply(resized, equalised);
    clahe.delete();
    const pixels = mat(new cv.Mat());
    equalised.convertTo(pixels, cv.CV_32F);
    const blurred = mat(new cv.Mat());
    const k = preprocessing.unsharp_kernel;
    cv.GaussianBlur(pixels, blurred, new cv.Size(k, k), 0, 0, cv.BORDER_REFLECT_101);
    const amount = Math.fround(preprocessing.unsharp_amount);
    const p = pixels.data32F;
    const b = blurred.data32F;
    const out = new Uint8Array(size * size);
    for (let i = 0; i < out.length; i++) {
      const sharpened = Math.fround(p[i] + Math.fround(amount * Math.fround(p[i] - b[i])));
      out[i] = Math.min(255, Math.max(0, roundHalfEven(sharpened)));
    }
    return out;
  } finally {
    for (const m of mats) m.delete();
  }
}
