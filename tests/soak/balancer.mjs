// The ALB-like balancer in front of the nodes.

import net from 'node:net';

import { freePort, splice } from '../interop/harness.mjs';
import { rand } from './options.mjs';
import { httpStatus } from './processes.mjs';

/** The one balancer of the run, once started. */
export let balancer = null;

/** ALB-like balancer: each new TCP connection goes to a random node whose /health is 200. */
export async function startBalancer(nodes) {
  const port = await freePort();
  const sockets = new Set();
  const routed = Object.fromEntries(nodes.map((n) => [n.id, 0]));
  const portToNode = new Map(); // client-side port of a routed connection -> node id
  let refused = 0;
  const server = net.createServer(async (client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    client.pause();
    const candidates = nodes.filter((n) => n.running).sort(() => rand() - 0.5);
    let target = null;
    for (const n of candidates) {
      if ((await httpStatus(`${n.httpUrl}/health`, 500)).status === 200) {
        target = n;
        break;
      }
    }
    if (!target || client.destroyed) {
      refused += 1;
      client.destroy();
      return;
    }
    routed[target.id] += 1;
    const key = client.remotePort;
    portToNode.set(key, target.id);
    client.on('close', () => setTimeout(() => portToNode.delete(key), 60_000).unref());
    splice(client, target.port, sockets);
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  balancer = {
    url: `ws://127.0.0.1:${port}`,
    routed,
    nodeOf: (localPort) => portToNode.get(localPort) ?? '?',
    get refused() {
      return refused;
    },
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
  return balancer;
}
