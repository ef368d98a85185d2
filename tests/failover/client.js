// A Node HTTP client that resolves the name with c-ares before every request, through one
// resolver of its own (dns.Resolver + setServers, bypassing /etc/resolv.conf), and connects to
// the first address with no keep-alive. One request every EVERY ms until DEADLINE (epoch ms) or
// MAX requests. Per request one log line: when it started, the answer and its TTL, the address
// the socket connected to and the side that answered (the backend's body names its address).
//
// usage: node client.js NAME PORT RESOLVER DEADLINE_MS MAX EVERY_MS LOG
'use strict';
const dns = require('dns');
const fs = require('fs');
const http = require('http');

const [name, port, server, deadline, max, every, logPath] = process.argv.slice(2);
const resolver = new dns.Resolver({ timeout: 1000, tries: 1 });
resolver.setServers([server]);
const agent = new http.Agent({ keepAlive: false });
const log = (line) => fs.appendFileSync(logPath, `${line}\n`);

function resolve() {
  return new Promise((ok, fail) => resolver.resolve4(name, { ttl: true },
    (err, records) => (err ? fail(err) : ok(records))));
}

function get(addr) {
  return new Promise((ok) => {
    const req = http.get({ host: addr, port: Number(port), path: '/', agent,
      headers: { Host: name, 'User-Agent': 'node-client' }, timeout: 2000 }, (res) => {
      const remote = res.socket.remoteAddress;
      let body = '';
      res.setEncoding('ascii');
      res.on('data', (d) => { body += d; });
      res.on('end', () => ok({ remote, served: body.trim() }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => ok({ remote: '-', served: `error:${e.code || e.message}` }));
  });
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

(async () => {
  for (let i = 0; i < Number(max) && Date.now() < Number(deadline); i += 1) {
    const t = Date.now();
    let line;
    try {
      const records = await resolve();
      const { remote, served } = await get(records[0].address);
      line = `ms=${t} pid=${process.pid} dns=${records[0].address} ttl=${records[0].ttl} `
        + `connected=${remote} served=${served}`;
    } catch (e) {
      line = `ms=${t} pid=${process.pid} dns=error:${e.code || e.message}`;
    }
    log(line);
    await sleep(Number(every));
  }
})();
