// The explorer's hand-written forward pass (numpyvae/explorer/forward.js) against numpyvae's own.
//
// tests/test_explore.py exports small models (dense and conv, plain and conditional, every
// likelihood) with `numpyvae.explore.write_site`, writes fixed inputs and what VAE.decode and
// VAE.encode give for them beside each, and runs `node --test` on this file with
// NUMPYVAE_EXPLORER_CASES naming that folder. Run alone, without the folder, it fails: there is
// nothing to compare with.
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { loadModel, samplePrior, sigmoid } from "../../numpyvae/explorer/forward.js";

const TOLERANCE = 1e-5;     // per pixel, and per coordinate of mu and logvar
const root = process.env.NUMPYVAE_EXPLORER_CASES;

function load(folder) {
  const manifest = JSON.parse(readFileSync(join(folder, "model.json"), "utf8"));
  const bytes = readFileSync(join(folder, manifest.weights.file));
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  return { model: loadModel(manifest, buffer), cases: JSON.parse(readFileSync(join(folder, "cases.json"), "utf8")) };
}

function assertClose(actual, expected, what) {
  assert.equal(actual.length, expected.length, `${what}: ${actual.length} numbers, expected ${expected.length}`);
  let worst = 0, where = -1;
  for (let i = 0; i < expected.length; i++) {
    const error = Math.abs(actual[i] - expected[i]);
    if (!(error <= worst)) { worst = error; where = i; }     // NaN counts as the worst
  }
  assert.ok(worst <= TOLERANCE, `${what}: entry ${where} is ${actual[where]}, numpyvae's ${expected[where]} ` +
                                `(off by ${worst}, more than ${TOLERANCE})`);
}

test("the fixtures are there", () => {
  assert.ok(root, "NUMPYVAE_EXPLORER_CASES is not set: run this through `pytest tests/test_explore.py`");
  assert.ok(readdirSync(root).length > 0, `no models in ${root}`);
});

test("a prior's sample is a component's mean plus its standard deviation times the noise", () => {
  const prior = { means: [[0, 1], [5, -5], [10, 20]], logvars: [[0, 0], [Math.log(4), 0], [0, Math.log(9)]] };
  // uniform() picks the component: [0, 1/3) the first, [1/3, 2/3) the second, [2/3, 1) the third
  assert.deepEqual(samplePrior(prior, () => 0, () => 0.5), [5, -5]);
  assert.deepEqual(samplePrior(prior, () => 1, () => 0.4), [7, -4]);           // 5 + 1 * 2, -5 + 1 * 1
  assert.deepEqual(samplePrior(prior, () => -1, () => 0.999), [9, 17]);        // 10 - 1, 20 - 3
  assert.deepEqual(samplePrior({ means: [[0, 0, 0]], logvars: [[0, 0, 0]] }, () => 0.5, () => 0.7), [0.5, 0.5, 0.5]);
});

for (const name of root ? readdirSync(root).sort() : []) {
  test(`${name}: decode and encode equal numpyvae's`, () => {
    const { model, cases } = load(join(root, name));
    cases.z.forEach((z, row) => {
      const label = cases.labels ? cases.labels[row] : undefined;
      const pixels = model.decode(z, label);
      assert.ok(pixels instanceof Float32Array, "decode returns a Float32Array");
      assert.ok(pixels.every((p) => p >= 0 && p <= 1), "pixel means lie in [0, 1]");
      assertClose(pixels, cases.decode[row], `decode, row ${row}`);
    });
    cases.x.forEach((x, row) => {
      const label = cases.labels ? cases.labels[row] : undefined;
      const { mu, logvar } = model.encode(x, label);
      assertClose(mu, cases.mu[row], `mu, row ${row}`);
      assertClose(logvar, cases.logvar[row], `logvar, row ${row}`);
    });
    // the prior the page samples: a VampPrior's components are this page's own encoder at the pseudo-inputs
    // sigmoid(a_k) (the weights file's prior.pseudo_logits); the standard normal's one component is N(0, I)
    const { means, logvars } = model.prior, pseudo = model.tensor("prior.pseudo_logits");
    means.forEach((m, k) => {
      if (!pseudo) {
        assertClose(m.concat(logvars[k]), new Array(2 * model.latentDim).fill(0), "N(0, I)");
        return;
      }
      const u = Array.from(pseudo.slice(k * model.pixels, (k + 1) * model.pixels), sigmoid);
      const { mu, logvar } = model.encode(u);
      assertClose(mu, m, `the prior's component ${k}: its mean`);
      assertClose(logvar, logvars[k], `the prior's component ${k}: its log-variance`);
    });
  });
}
