// Resolves a name with c-ares (Node's dns.resolve4, or a dns.Resolver on a given server), logs
// what it got, then connects to the first answer as a client would.
'use strict';
const dns = require('dns');
const fs = require('fs');
const net = require('net');

const [name, port, server] = process.argv.slice(2);
const resolver = new dns.Resolver();
if (server) {
  resolver.setServers([server]);
}
const resolve4 = server ? resolver.resolve4.bind(resolver) : dns.resolve4;
resolve4(name, { ttl: true }, (err, records) => {
  if (err) {
    console.error(`resolve4 ${name}: ${err.message}`);
    process.exit(1);
  }
  const comm = fs.readFileSync('/proc/self/comm', 'utf8').trim();
  console.log(JSON.stringify({
    pid: process.pid, comm,
    addrs: records.map((r) => r.address), ttls: records.map((r) => r.ttl),
  }));
  const s = net.connect({ host: records[0].address, port: Number(port) });
  s.setTimeout(2000, () => process.exit(0));
  s.on('error', () => process.exit(0));
  s.on('connect', () => { s.destroy(); process.exit(0); });
});
