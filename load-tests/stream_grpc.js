// Streaming ingest load: every VU is one device streaming all modalities over one gRPC Ingest.Stream in
// real time (one chunk per modality per CHUNK_MS), replaying real DSADS windows from golden.json, and
// counting the predictions that come back on its stream.
//   .venv/bin/k6 run -e TARGET=127.0.0.1:50051 -e DEVICES=200 -e SECONDS=60 load-tests/stream_grpc.js
// With a hop of 1 s each device should get ~1 prediction per second once its first window (5 s) is full:
// compare `predictions` with DEVICES × (SECONDS − 5) and read the latency trend (window end → received).
import grpc from 'k6/net/grpc';
import { Counter, Trend } from 'k6/metrics';
import { setInterval, clearInterval, setTimeout } from 'k6/timers';
import exec from 'k6/execution';

const TARGET = __ENV.TARGET || '127.0.0.1:50051';
const DEVICES = Number(__ENV.DEVICES || 50);
const SECONDS = Number(__ENV.SECONDS || 30);
const CHUNK_MS = Number(__ENV.CHUNK_MS || 200);

const manifest = JSON.parse(open('../models/crossl-dsads/model.json'));
const golden = JSON.parse(open('../models/crossl-dsads/golden.json'));
const full = golden.cases.find((c) => Object.keys(c.modalities).length === manifest.modalities.length);

const client = new grpc.Client();
client.load(['../proto'], 'crossl/v1/crossl.proto');

const predictions = new Counter('predictions');
const chunkErrors = new Counter('chunk_errors');
const chunksSent = new Counter('chunks_sent');
const latency = new Trend('window_end_to_client_ms', true);

export const options = {
  scenarios: {
    devices: { executor: 'per-vu-iterations', vus: DEVICES, iterations: 1, maxDuration: `${SECONDS + 30}s` },
  },
  summaryTrendStats: ['med', 'p(90)', 'p(99)', 'max'],
};

export default function () {
  client.connect(TARGET, { plaintext: true, reflect: false });
  const metadata = __ENV.API_KEY ? { authorization: `Bearer ${__ENV.API_KEY}` } : {};
  const stream = new grpc.Stream(client, 'crossl.v1.Ingest/Stream', { metadata });
  const device = `k6-${exec.vu.idInTest}`;
  stream.on('data', (msg) => {
    if (msg.prediction) {
      predictions.add(1);
      const endMs = Number(BigInt(msg.prediction.windowEndUnixNanos) / 1000000n);
      latency.add(Date.now() - endMs);
    } else if (msg.chunkError) {
      chunkErrors.add(1);
    }
  });
  stream.on('error', (e) => console.error(`${device}: ${e.message}`));

  stream.write({ hello: { deviceId: device, modalities: manifest.modalities.map((m) => m.name) } });
  // The device clock: sample i of a modality is at t0 + i / rate; a chunk is sent once its last sample
  // has happened, like firmware flushing a buffer.
  const started = Date.now();
  const t0 = BigInt(started) * 1000000n;
  const sent = Object.fromEntries(manifest.modalities.map((m) => [m.name, 0]));
  const timer = setInterval(() => {
    const elapsedS = (Date.now() - started) / 1000;
    for (const m of manifest.modalities) {
      const due = Math.floor(elapsedS * m.sample_rate_hz) - sent[m.name];
      if (due <= 0) continue;
      const rows = full.modalities[m.name];
      const samples = [];
      for (let i = 0; i < due; i++) samples.push(...rows[(sent[m.name] + i) % rows.length]);
      const startNs = t0 + BigInt(Math.round((sent[m.name] * 1e9) / m.sample_rate_hz));
      stream.write({ chunk: { deviceId: device, modality: m.name, startUnixNanos: startNs.toString(), samples } });
      sent[m.name] += due;
      chunksSent.add(1);
    }
    if (Date.now() - started >= SECONDS * 1000) {
      clearInterval(timer);
      setTimeout(() => { stream.end(); client.close(); }, 2000);
    }
  }, CHUNK_MS);
}
