// A plain Node HTTP server; `ms` (from npm, pinned in package-lock.json) proves the libraries layer.
'use strict';
const http = require('http');
const ms = require('ms');

const port = Number(process.env.PORT || 3000);
const started = Date.now();

const server = http.createServer((request, response) => {
  if (request.url === '/health') {
    response.writeHead(200, {'Content-Type': 'text/plain'});
    response.end('ok\n');
    return;
  }
  response.writeHead(200, {'Content-Type': 'application/json'});
  response.end(JSON.stringify({
    greeting: process.env.GREETING || 'Hello',
    environment: process.env.IMAGEBUILD_ENV || null,
    version: process.env.IMAGEBUILD_VERSION || null,
    up: ms(Date.now() - started),
    node: process.version,
  }) + '\n');
});

// The launcher execs node, so docker stop sends SIGTERM to it: close the server and exit cleanly.
process.on('SIGTERM', () => server.close(() => process.exit(0)));
server.listen(port, '0.0.0.0');
