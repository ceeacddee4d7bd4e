'use strict';
// What every Node.js logger generator shares: the scenario, the OTel tracer and the expected file.
// Each library adapter logs the same eight lines; `<library>.expected.jsonl` is written from what the
// generator passed in (message, level, the span's ids, the clock around the call), never from the output.

const fs = require('node:fs');
const path = require('node:path');
const { Writable } = require('node:stream');
const { trace } = require('@opentelemetry/api');

const CORPUS_DIR = path.resolve(__dirname, '..', '..');
const SERVICE_NAME = 'checkout';
const ORDER_FIELDS = {
  order_id: 1001,
  amount: 12.5,
  currency: 'EUR',
  items: ['sku-1', 'sku-2'],
  customer: { id: 42, tier: 'gold' },
};
const NON_ASCII_MESSAGE = 'Zahlung für "Müller" bestätigt: 5 € · 日本 ✓';

function libraryOutputPath(library) {
  return path.join(CORPUS_DIR, `${library}.jsonl`);
}

// A Writable that writes each chunk synchronously, so every line is on disk when the log call returns
// and the process can exit without waiting for a flush.
function syncFileStream(filePath) {
  const fd = fs.openSync(filePath, 'w');
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      fs.writeSync(fd, chunk);
      callback();
    },
  });
  stream.closeFile = () => fs.closeSync(fd);
  return stream;
}

// Date.now() is in milliseconds; nanoseconds since the epoch pass 2**53, so they are BigInts.
function nowNs() {
  return BigInt(Date.now()) * 1000000n;
}

function failingCharge() {
  throw new Error('card declined');
}

function withSpan(name, body) {
  const tracer = trace.getTracer('tether.logger-corpus');
  return tracer.startActiveSpan(name, (span) => {
    try {
      const context = span.spanContext();
      return body(context.traceId, context.spanId);
    } finally {
      span.end();
    }
  });
}

// adapter: { emit(line), keys(line), service(line), renderedMessage(line) }
function runScenario(adapter) {
  const expected = [];
  const log = (line) => {
    const full = { fields: {}, error: null, traceId: null, spanId: null, ...line };
    const before = nowNs();
    adapter.emit(full);
    const after = nowNs();
    expected.push({
      message: adapter.renderedMessage(full),
      level: full.level,
      trace_id: full.traceId,
      span_id: full.spanId,
      service: adapter.service(full),
      // Whole seconds below, the millisecond clock plus 1 ms above (Date.now() truncates).
      time_min_ns: (before / 1000000000n) * 1000000000n,
      time_max_ns: after + 1000000n,
      keys: adapter.keys(full),
    });
  };

  log({ level: 'info', message: 'user 42 logged in' });
  log({ level: 'debug', message: 'cache lookup for cart 7' });
  log({ level: 'warn', message: 'payment retry 2 of 3' });
  try {
    failingCharge();
  } catch (error) {
    log({ level: 'error', message: 'charge failed', error });
  }
  withSpan('place-order', (traceId, spanId) => {
    log({ level: 'info', message: 'order 1001 placed', traceId, spanId });
    withSpan('reserve-stock', (childTraceId, childSpanId) => {
      log({ level: 'warn', message: 'stock low for sku-2', traceId: childTraceId, spanId: childSpanId });
    });
  });
  log({ level: 'info', message: 'checkout completed', fields: ORDER_FIELDS });
  log({ level: 'info', message: NON_ASCII_MESSAGE });
  return expected;
}

// JSON.stringify cannot print a BigInt; the time bounds are written as plain integers instead.
function toJsonLine(entry) {
  return JSON.stringify(entry, (_key, value) => (typeof value === 'bigint' ? `__ns__${value}` : value))
    .replace(/"__ns__(\d+)"/g, '$1');
}

function writeExpected(library, expected) {
  const lines = expected.map((entry) => `${toJsonLine(entry)}\n`).join('');
  fs.writeFileSync(path.join(CORPUS_DIR, `${library}.expected.jsonl`), lines);
}

module.exports = {
  NON_ASCII_MESSAGE,
  SERVICE_NAME,
  libraryOutputPath,
  runScenario,
  syncFileStream,
  writeExpected,
};
