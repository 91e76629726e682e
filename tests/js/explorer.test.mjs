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

import { loadModel } from "../../numpyvae/explorer/forward.js";

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
  });
}
