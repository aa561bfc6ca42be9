// The heatmap of a class activation map, as tf_fracture_export.heatmap draws it: the map's logits
// upsampled bilinearly (half-pixel centres, OpenCV's INTER_LINEAR) to the input's size, then a
// sigmoid (a per-position fracture probability, so a normal image stays cold), blended over the
// preprocessed image in a jet colour map with opacity 0.6 * heat.
export const ALPHA = 0.6;

/** (h, w) logits -> Float32Array (size*size) of heat in [0, 1]. */
export function camHeat(cam, [h, w], size) {
  const heat = new Float32Array(size * size);
  const axis = (n, i) => {
    const x = Math.min(Math.max((i + 0.5) * (n / size) - 0.5, 0), n - 1);
    const lo = Math.floor(x);
    return [lo, Math.min(lo + 1, n - 1), x - lo];
  };
  for (let y = 0; y < size; y++) {
    const [y0, y1, fy] = axis(h, y);
    for (let x = 0; x < size; x++) {
      const [x0, x1, fx] = axis(w, x);
      const top = cam[y0 * w + x0] * (1 - fx) + cam[y0 * w + x1] * fx;
      const bottom = cam[y1 * w + x0] * (1 - fx) + cam[y1 * w + x1] * fx;
      const logit = top * (1 - fy) + bottom * fy;
      heat[y * size + x] = 1 / (1 + Math.exp(-logit));
    }
  }
  return heat;
}

function jet(v) {
  const channel = (offset) => Math.min(Math.max(1.5 - Math.abs(4 * v - offset), 0), 1);
  return [channel(3), channel(2), channel(1)];
}

/** RGBA ImageData of the grey input with the heat blended in (heat null: the input alone). */
export function overlay(pixels, heat, size, alpha = ALPHA) {
  const image = new ImageData(size, size);
  for (let i = 0; i < pixels.length; i++) {
    const grey = pixels[i];
    const opacity = heat ? alpha * heat[i] : 0;
    const colour = heat ? jet(heat[i]) : [0, 0, 0];
    for (let c = 0; c < 3; c++) {
      image.data[4 * i + c] = Math.round((1 - opacity) * grey + opacity * 255 * colour[c]);
    }
    image.data[4 * i + 3] = 255;
  }
  return image;
}
