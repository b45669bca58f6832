// gRPC-Web calls with the official `grpc-web` client library (the one browsers use), under Node
// with the `xhr2` XMLHttpRequest; messages (de)serialized by protobufjs from the test .proto, no
// code generation.
//
//   node grpc_web_client.js BASE_URL text|binary CHECK
//
// CHECK: unary | stream | error | deadline. Prints one JSON line with what the call returned
// and exits 0; exits 1 with the error on stderr when the call did not behave as expected.
// (`binary` is unary only: the library streams in text mode.)
'use strict';

global.XMLHttpRequest = require('xhr2');
const path = require('path');
const protobuf = require('protobufjs');
const grpcWeb = require('grpc-web');

const [, , base, mode, check] = process.argv;
if (!base || !['text', 'binary'].includes(mode) || !check) {
  console.error('usage: grpc_web_client.js BASE_URL text|binary unary|stream|error|deadline');
  process.exit(2);
}

const root = new protobuf.Root();
// The test tree has the .proto files; protobufjs bundles the well-known types (`common`) and
// descriptor.proto.
root.resolvePath = (origin, target) => {
  if (target.startsWith('google/protobuf/')) {
    return target in protobuf.common ? target : path.join(path.dirname(require.resolve('protobufjs/package.json')), target);
  }
  return path.join(__dirname, '..', 'proto', target);
};
root.loadSync(['bookstore/v1/bookstore.proto', 'google/protobuf/empty.proto'], { keepCase: false });
const T = (n) => root.lookupType(n);

function method(name, kind, req, resp) {
  return new grpcWeb.MethodDescriptor(
    `/bookstore.v1.Bookstore/${name}`, kind, Object, Object,
    (m) => T(req).encode(T(req).fromObject(m)).finish(),
    (bytes) => T(resp).toObject(T(resp).decode(bytes), { longs: String, enums: String }),
  );
}

const client = new grpcWeb.GrpcWebClientBase({ format: mode });
const fail = (msg) => { console.error(msg); process.exit(1); };
const done = (out) => { console.log(JSON.stringify(out)); process.exit(0); };
setTimeout(() => fail('timed out after 20s'), 20000).unref();

if (check === 'unary') {
  const md = method('GetShelf', 'unary', 'bookstore.v1.GetShelfRequest', 'bookstore.v1.Shelf');
  const call = client.rpcCall(`${base}/bookstore.v1.Bookstore/GetShelf`, { shelf: 1 }, { 'x-echo': 'hello' }, md,
    (err, resp) => (err ? fail(`unexpected error ${err.code}: ${err.message}`) : done({ shelf: resp, headers })));
  let headers = {};
  call.on('metadata', (h) => { headers = h; });
} else if (check === 'stream') {
  const md = method('StreamBooks', 'server_streaming', 'bookstore.v1.StreamBooksRequest', 'bookstore.v1.Book');
  const books = [];
  const s = client.serverStreaming(`${base}/bookstore.v1.Bookstore/StreamBooks`, { shelf: 1, intervalMs: 50 }, {}, md);
  s.on('data', (b) => books.push({ title: b.title, at: Date.now() }));
  s.on('error', (e) => fail(`stream error ${e.code}: ${e.message}`));
  s.on('status', (st) => { if (st.code !== 0) fail(`stream status ${st.code}`); });
  s.on('end', () => done({ books }));
} else if (check === 'error') {
  const md = method('Fail', 'unary', 'bookstore.v1.FailRequest', 'google.protobuf.Empty');
  client.rpcCall(`${base}/bookstore.v1.Bookstore/Fail`, { code: 5, message: 'no: 100% ✗' }, {}, md, (err) => {
    if (!err) fail('expected an error');
    if (err.code !== 5 || err.message !== 'no: 100% ✗' || (err.metadata || {})['x-fail-reason'] !== 'asked') {
      fail(`unexpected error ${JSON.stringify(err)}`);
    }
    done({ code: err.code, message: err.message, metadata: err.metadata });
  });
} else if (check === 'deadline') {
  const md = method('Sleep', 'unary', 'bookstore.v1.SleepRequest', 'bookstore.v1.SleepResponse');
  const started = Date.now();
  client.rpcCall(`${base}/bookstore.v1.Bookstore/Sleep`, { millis: 3000 }, { deadline: String(Date.now() + 300) }, md,
    (err) => {
      if (!err) fail('expected DEADLINE_EXCEEDED');
      if (err.code !== 4) fail(`expected code 4, got ${err.code}: ${err.message}`);
      done({ code: err.code, message: err.message, elapsed_ms: Date.now() - started });
    });
} else {
  fail(`unknown check ${check}`);
}
