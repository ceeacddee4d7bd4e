'use strict';
// Usage: node generate.js <node-pino|node-bunyan|node-winston|node-winston-timestamp>
// Writes tests/data/loggers/<library>.jsonl by running the real library with its OpenTelemetry
// instrumentation, and <library>.expected.jsonl from what was passed in.

const { NodeTracerProvider } = require('@opentelemetry/sdk-trace-node');
const { registerInstrumentations } = require('@opentelemetry/instrumentation');
const { PinoInstrumentation } = require('@opentelemetry/instrumentation-pino');
const { BunyanInstrumentation } = require('@opentelemetry/instrumentation-bunyan');
const { WinstonInstrumentation } = require('@opentelemetry/instrumentation-winston');
const corpus = require('./corpus');

// Only the id injection ("log correlation") is wanted; log sending would need an OTel logs SDK.
const INSTRUMENTATION_CONFIG = { disableLogSending: true };

function setUpTracing(instrumentation) {
  const provider = new NodeTracerProvider();
  provider.register(); // global tracer provider + AsyncLocalStorage context manager
  // Instrumentations patch the library on require, so they are registered before it is loaded.
  registerInstrumentations({ instrumentations: [instrumentation] });
}

function idKeys(line, traceKey, spanKey) {
  const inSpan = line.traceId !== null;
  return { trace_id: inSpan ? traceKey : null, span_id: inSpan ? spanKey : null };
}

// pino with default options except level 'debug' (so debug lines are written); errors go first,
// as pino documents, and land under "err".
function pinoAdapter(outputPath) {
  setUpTracing(new PinoInstrumentation(INSTRUMENTATION_CONFIG));
  const pino = require('pino');
  const logger = pino({ level: 'debug' }, pino.destination({ dest: outputPath, sync: true, append: false }));
  return {
    emit(line) {
      const first = line.error !== null ? line.error : line.fields;
      logger[line.level](first, line.message);
    },
    keys(line) {
      return { message: 'msg', level: 'level', time: 'time', ...idKeys(line, 'trace_id', 'span_id'), service: null };
    },
    service() {
      return null;
    },
    renderedMessage(line) {
      return line.message;
    },
    close() {},
  };
}

// bunyan: its required `name` is the application's name, so it is the service ("checkout").
function bunyanAdapter(outputPath) {
  setUpTracing(new BunyanInstrumentation(INSTRUMENTATION_CONFIG));
  const bunyan = require('bunyan');
  const stream = corpus.syncFileStream(outputPath);
  const logger = bunyan.createLogger({ name: corpus.SERVICE_NAME, level: 'debug', stream });
  return {
    emit(line) {
      const first = line.error !== null ? line.error : line.fields;
      logger[line.level](first, line.message);
    },
    keys(line) {
      return { message: 'msg', level: 'level', time: 'time', ...idKeys(line, 'trace_id', 'span_id'), service: 'name' };
    },
    service() {
      return corpus.SERVICE_NAME;
    },
    renderedMessage(line) {
      return line.message;
    },
    close() {
      stream.closeFile();
    },
  };
}

// winston's README setup: format.json() (optionally after timestamp()) and defaultMeta.service.
function winstonAdapter(outputPath, withTimestamp) {
  setUpTracing(new WinstonInstrumentation(INSTRUMENTATION_CONFIG));
  const winston = require('winston');
  const stream = corpus.syncFileStream(outputPath);
  const format = withTimestamp
    ? winston.format.combine(winston.format.timestamp(), winston.format.json())
    : winston.format.json();
  const logger = winston.createLogger({
    level: 'debug',
    format,
    defaultMeta: { service: corpus.SERVICE_NAME },
    transports: [new winston.transports.Stream({ stream })],
  });
  return {
    emit(line) {
      // The usual call: logger.error(message, error) / logger.info(message, meta).
      const meta = line.error !== null ? line.error : line.fields;
      logger[line.level](line.message, meta);
    },
    keys(line) {
      return {
        message: 'message',
        level: 'level',
        time: withTimestamp ? 'timestamp' : null,
        ...idKeys(line, 'trace_id', 'span_id'),
        service: 'service',
      };
    },
    service() {
      return corpus.SERVICE_NAME;
    },
    renderedMessage(line) {
      // winston appends an Error meta's message to the message, separated by a space.
      return line.error !== null ? `${line.message} ${line.error.message}` : line.message;
    },
    close() {
      stream.closeFile();
    },
  };
}

const ADAPTERS = {
  'node-pino': (outputPath) => pinoAdapter(outputPath),
  'node-bunyan': (outputPath) => bunyanAdapter(outputPath),
  'node-winston': (outputPath) => winstonAdapter(outputPath, false),
  'node-winston-timestamp': (outputPath) => winstonAdapter(outputPath, true),
};

function main() {
  const library = process.argv[2];
  const makeAdapter = ADAPTERS[library];
  if (makeAdapter === undefined) {
    console.error(`usage: node generate.js <${Object.keys(ADAPTERS).join('|')}>`);
    process.exit(2);
  }
  const adapter = makeAdapter(corpus.libraryOutputPath(library));
  const expected = corpus.runScenario(adapter);
  adapter.close();
  corpus.writeExpected(library, expected);
}

main();
