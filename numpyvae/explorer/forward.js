// numpyvae-explorer: forward.js, a VAE's forward pass written out by hand, driven by model.json.
//
// numpyvae explore exports a model as a layer description (its four layer lists, network.py) and
// one file of little-endian float32 weights. This module runs that description, one example at a
// time, every layer kind numpyvae has, wired as vae.py wires them:
//
//     x (D) -> features -> f (F) -> [f, onehot(y)] (F + K) -> encoder -> h -> heads -> mu, logvar (Z)
//     z (Z) -> [z, onehot(y)] (Z + K) -> decoder -> logits (D) -> the likelihood's mean, in [0, 1]
//
// Activations are Float64Arrays holding one example in numpyvae's row-major order ((C, H, W)
// for an image), so Reshape and Flatten change nothing but the shape the next layer reads.
// The weights are float32, as trained; the sums here are float64 (numpyvae's are float32):
// tests/js/explorer.test.mjs holds decode and encode to VAE.decode and VAE.encode within 1e-5.
//
// Shapes: C = channels, H x W = image, k = kernel, s = stride, p = padding, D = pixels, K = classes, Z = latent.

export const FORMAT = "numpyvae-explorer";
export const VERSION = 2;          // 2: model.json describes the prior the page samples

// -- the layers: each takes (layer description, its tensors, input, input shape) -> [output, output shape]

// y[o] = b[o] + sum_i x[i] W[i, o];  W (I, O), as numpyvae stores it (y = x @ W + b)
function linear(layer, t, x) {
  const I = layer.in, O = layer.out, W = t.W;
  if (x.length !== I) throw new Error(`${layer.name} takes ${I} numbers, not ${x.length}`);
  const y = Float64Array.from(t.b);
  for (let i = 0; i < I; i++) {
    const xi = x[i];
    if (xi === 0) continue;                  // after a ReLU, many are
    const row = i * O;
    for (let o = 0; o < O; o++) y[o] += xi * W[row + o];
  }
  return [y, [O]];
}

function relu(layer, t, x, shape) {
  return [x.map((v) => (v > 0 ? v : 0)), shape];
}

// sigmoid(x) = (1 + tanh(x / 2)) / 2, as numpyvae's layers.sigmoid: never overflows
export function sigmoid(v) {
  return 0.5 * (1 + Math.tanh(0.5 * v));
}

function sigmoidLayer(layer, t, x, shape) {
  return [x.map(sigmoid), shape];
}

function reshape(layer, t, x, shape) {
  const size = layer.shape.reduce((a, b) => a * b, 1);
  if (size !== x.length) throw new Error(`${layer.name} cannot reshape ${shape} to ${layer.shape}`);
  return [x, layer.shape.slice()];
}

// PyTorch's conv2d (a cross-correlation), W (O, C, k, k):
//     y[o, i, j] = b[o] + sum over c, u, v of W[o, c, u, v] x[c, s i + u - p, s j + v - p]
// with x zero outside the image; Ho = floor((H + 2p - k) / s) + 1.
function conv2d(layer, t, x, shape) {
  const [C, H, Wd] = shape, O = layer.out_channels, k = layer.kernel_size, s = layer.stride, p = layer.padding;
  if (C !== layer.in_channels) throw new Error(`${layer.name} takes ${layer.in_channels} channels, not ${C}`);
  const Ho = Math.floor((H + 2 * p - k) / s) + 1, Wo = Math.floor((Wd + 2 * p - k) / s) + 1;
  const W = t.W, y = new Float64Array(O * Ho * Wo);
  for (let o = 0; o < O; o++) {
    for (let i = 0; i < Ho; i++) {
      for (let j = 0; j < Wo; j++) {
        let sum = t.b[o];
        for (let c = 0; c < C; c++) {
          for (let u = 0; u < k; u++) {
            const h = s * i + u - p;
            if (h < 0 || h >= H) continue;
            for (let v = 0; v < k; v++) {
              const w = s * j + v - p;
              if (w < 0 || w >= Wd) continue;
              sum += W[((o * C + c) * k + u) * k + v] * x[(c * H + h) * Wd + w];
            }
          }
        }
        y[(o * Ho + i) * Wo + j] = sum;
      }
    }
  }
  return [y, [O, Ho, Wo]];
}

// PyTorch's conv_transpose2d, W (C, O, k, k): each input pixel stamps its kernel at stride s,
//     y[o, h, w] = b[o] + sum of x[c, i, j] W[c, o, u, v] over c and (u, v, i, j) with s i + u - p = h, s j + v - p = w
// Hout = (H - 1) s - 2p + k + output_padding; the output_padding rows and columns get the bias alone.
function convTranspose2d(layer, t, x, shape) {
  const [C, H, Wd] = shape, O = layer.out_channels, k = layer.kernel_size, s = layer.stride, p = layer.padding;
  if (C !== layer.in_channels) throw new Error(`${layer.name} takes ${layer.in_channels} channels, not ${C}`);
  const op = layer.output_padding;
  const Ho = (H - 1) * s - 2 * p + k + op, Wo = (Wd - 1) * s - 2 * p + k + op;
  const W = t.W, y = new Float64Array(O * Ho * Wo);
  for (let o = 0; o < O; o++) y.fill(t.b[o], o * Ho * Wo, (o + 1) * Ho * Wo);
  for (let c = 0; c < C; c++) {
    for (let i = 0; i < H; i++) {
      for (let j = 0; j < Wd; j++) {
        const xv = x[(c * H + i) * Wd + j];
        if (xv === 0) continue;
        for (let o = 0; o < O; o++) {
          for (let u = 0; u < k; u++) {
            const h = s * i + u - p;
            if (h < 0 || h >= Ho) continue;
            for (let v = 0; v < k; v++) {
              const w = s * j + v - p;
              if (w < 0 || w >= Wo) continue;
              y[(o * Ho + h) * Wo + w] += xv * W[((c * O + o) * k + u) * k + v];
            }
          }
        }
      }
    }
  }
  return [y, [O, Ho, Wo]];
}

export const LAYERS = {
  linear, relu, sigmoid: sigmoidLayer, reshape, flatten: reshape, conv2d, conv_transpose2d: convTranspose2d,
};

// -- the likelihoods' means: E[x | logits], what a decoded image shows (losses.py) --------------------

// d log C / dl = 1/l - 1/sinh(l) for the continuous Bernoulli's normalizer C(l) = l / tanh(l / 2):
// 1/|l| - 2 t / (1 - t^2) with t = exp(-|l|), given l's sign, and below |l| = seriesBelow its
// Taylor series l (c1 + c3 l^2 + c5 l^4 + ...), whose coefficients model.json carries from losses.py.
function dlogC(l, seriesBelow, coefficients) {
  const a = Math.abs(l);
  if (a < seriesBelow) {
    const l2 = l * l;
    let sum = 0;
    for (let n = coefficients.length - 1; n >= 0; n--) sum = sum * l2 + coefficients[n];
    return l * sum;
  }
  const t = Math.exp(-a);
  return Math.sign(l) * (1 / a - (2 * t) / (1 - t * t));
}

export const MEANS = {
  bernoulli: () => sigmoid,                  // p = sigmoid(l)
  gaussian: () => sigmoid,                   // the seed's squared error on sigmoid outputs: its mean is p too
  // E[x | l] = 1/(1 - e^-l) - 1/l = sigmoid(l) - d log C / dl (an exponential family: dA/dl = E[x])
  "continuous-bernoulli": (about) => (l) => sigmoid(l) - dlogC(l, about.series_below, about.dlog_c_series),
};

// -- the model ------------------------------------------------------------------------------------------

// Every tensor of model.json's list, as a Float32Array read from the weights file's little-endian bytes.
function readTensors(weights, buffer) {
  if (buffer.byteLength !== weights.bytes) {
    throw new Error(`the weights file holds ${buffer.byteLength} bytes, model.json says ${weights.bytes}`);
  }
  const view = new DataView(buffer), tensors = {};
  for (const { name, shape, offset } of weights.tensors) {
    const size = shape.reduce((a, b) => a * b, 1), values = new Float32Array(size);
    if (offset + 4 * size > buffer.byteLength) throw new Error(`${name} runs past the end of the weights file`);
    for (let i = 0; i < size; i++) values[i] = view.getFloat32(offset + 4 * i, true);
    tensors[name] = values;
  }
  return tensors;
}

// One z from the prior as model.json describes it (numpyvae's priors.Prior.mixture): an equal-weight
// mixture of diagonal Gaussians. A component k uniformly, then z_j = m_kj + eps_j exp(lv_kj / 2).
// normal() and uniform() are the random draws (N(0, 1) and [0, 1)), passed in so a test can fix them.
export function samplePrior(prior, normal, uniform) {
  const K = prior.means.length;
  const k = Math.min(K - 1, Math.floor(uniform() * K));
  return prior.means[k].map((m, j) => m + normal() * Math.exp(prior.logvars[k][j] / 2));
}

// manifest: model.json, parsed; buffer: the weights file's ArrayBuffer.
// Returns { decode(z, label), decodeLogits(z, label), encode(x, label), latentDim, numClasses, inputShape, pixels,
// prior (model.json's, for samplePrior), tensor(name) (a parameter, flat, or undefined) }.
export function loadModel(manifest, buffer) {
  if (manifest.format !== FORMAT || manifest.version !== VERSION) {
    throw new Error(`model.json is not a ${FORMAT} version ${VERSION} description`);
  }
  const tensors = readTensors(manifest.weights, buffer);
  const Z = manifest.latent_dim, K = manifest.num_classes, inputShape = manifest.input_shape;
  const D = inputShape.reduce((a, b) => a * b, 1);
  const mean = MEANS[manifest.likelihood.name];
  if (!mean) throw new Error(`no JavaScript for the mean of likelihood ${manifest.likelihood.name}`);
  const pixelMean = mean(manifest.likelihood);

  function run(layers, x, shape) {
    for (const layer of layers) {
      const step = LAYERS[layer.kind];
      if (!step) throw new Error(`no JavaScript for layer kind ${layer.kind}`);
      const t = { W: tensors[`${layer.name}.W`], b: tensors[`${layer.name}.b`] };
      [x, shape] = step(layer, t, x, shape);
    }
    return [x, shape];
  }

  // [a, onehot(label)] for a conditional model (the label columns are 0 or 1); a itself for a plain one
  function withLabel(a, label) {
    if (K === 0) return a;
    if (!Number.isInteger(label) || label < 0 || label >= K) {
      throw new Error(`a conditional model (${K} classes) needs a label in 0..${K - 1}, not ${label}`);
    }
    const out = new Float64Array(a.length + K);
    out.set(a);
    out[a.length + label] = 1;
    return out;
  }

  function vector(values, length, what) {
    if (values == null || values.length !== length) {
      throw new Error(`${what} must hold ${length} numbers, not ${values == null ? values : values.length}`);
    }
    return Float64Array.from(values);
  }

  function decodeLogits(z, label) {
    const zIn = withLabel(vector(z, Z, "z"), label);                       // (Z + K)
    return run(manifest.network.decoder, zIn, [zIn.length])[0];            // (D)
  }

  function decode(z, label) {
    return Float32Array.from(decodeLogits(z, label), pixelMean);           // (D) pixel means in [0, 1]
  }

  function encode(x, label) {
    const [f] = run(manifest.network.features, vector(x, D, "x"), [D]);    // (F); x itself for a dense model
    const fIn = withLabel(f, label);                                       // (F + K)
    const [h] = run(manifest.network.encoder, fIn, [fIn.length]);          // (H)
    const { mu, logvar } = manifest.network.heads;
    return { mu: run([mu], h, [h.length])[0], logvar: run([logvar], h, [h.length])[0] };   // (Z) each
  }

  return { decode, decodeLogits, encode, latentDim: Z, numClasses: K, inputShape, pixels: D, prior: manifest.prior,
           tensor: (name) => tensors[name] };
}
