// Saturated REST predict load: every VU posts one full window (a real DSADS window from golden.json) in a
// loop. Run against a server started with `make run` (or any address):
//   .venv/bin/k6 run -e BASE=http://127.0.0.1:8080 -e VUS=16 -e DURATION=30s load-tests/predict.js
// Reports http_req_duration percentiles and request rate; the server's /metrics shows batch sizes.
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.BASE || 'http://127.0.0.1:8080';
const golden = JSON.parse(open('../models/crossl-dsads/golden.json'));
const bodies = golden.cases.map((c) => JSON.stringify({ modalities: c.modalities }));
const headers = { 'Content-Type': 'application/json' };
if (__ENV.API_KEY) headers.Authorization = `Bearer ${__ENV.API_KEY}`;

export const options = {
  vus: Number(__ENV.VUS || 16),
  duration: __ENV.DURATION || '30s',
  thresholds: { checks: ['rate>0.99'] },
  summaryTrendStats: ['med', 'p(90)', 'p(99)', 'max'],
};

export default function () {
  const body = bodies[Math.floor(Math.random() * bodies.length)];
  const res = http.post(`${BASE}/v1/predict`, body, { headers });
  check(res, { 'status 200': (r) => r.status === 200 });
}
