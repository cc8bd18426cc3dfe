// The editors: real @hocuspocus/provider clients through the balancer.

import { HocuspocusProvider, WebSocket } from '../interop/harness.mjs';
import { balancer } from './balancer.mjs';
import { T0, between, docName, opts } from './options.mjs';

export const clients = []; // every client ever created, crashed ones included
export const live = () => clients.filter((c) => !c.crashed);

let nextClientNumber = 0;

export class Client {
  constructor(doc, url) {
    this.label = `c${nextClientNumber}`;
    nextClientNumber += 1;
    this.doc = doc;
    this.pushed = 0;
    this.acked = 0;
    this.pushAt = []; // ms since start, per item
    this.ackAt = []; // ms since start at which item k was first counted as acknowledged
    // `acked` = pushed - unsyncedChanges is exact only while the provider's counter tracks this
    // connection's updates one for one: after a (re)connect the provider resets the counter to 1
    // (the handshake), so it is trusted again only once it reached 0 on the new connection.
    this.clean = false;
    this.opens = 0;
    this.closes = 0;
    this.nodes = []; // [{at, node}] one per connection
    this.everSynced = false;
    this.crashed = false;
    this.nextAt = Date.now() + between(0, 1000 / opts.rate);
    this.provider = new HocuspocusProvider({
      url,
      name: docName(doc),
      token: 'soak',
      WebSocketPolyfill: WebSocket,
    });
    const p = this.provider;
    p.on('open', () => {
      this.opens += 1;
      this.clean = false;
      const ws = p.configuration.websocketProvider.webSocket;
      const node = balancer?.nodeOf(ws?._socket?.localPort) ?? '?';
      this.nodes.push({ at: Date.now() - T0, node });
    });
    p.on('close', () => {
      this.closes += 1;
      this.clean = false;
    });
    p.on('synced', () => {
      this.everSynced = true;
      this.sample();
    });
    p.on('unsyncedChanges', () => this.sample());
    this.array = p.document.getArray('items');
  }

  sample() {
    const p = this.provider;
    if (this.crashed || !p.isSynced || !p.isAuthenticated) return;
    if (!this.clean) {
      if (p.unsyncedChanges !== 0) return;
      this.clean = true;
    }
    const acked = this.pushed - p.unsyncedChanges;
    if (acked > this.acked) {
      const now = Date.now() - T0;
      for (let k = this.acked; k < acked; k += 1) this.ackAt[k] = now;
      this.acked = acked;
    }
  }

  push() {
    const item = `${this.label}-${this.pushed}`;
    this.pushAt[this.pushed] = Date.now() - T0;
    this.pushed += 1; // before the push: the provider counts the update inside push()
    this.array.push([item]);
  }

  get settled() {
    const p = this.provider;
    return p.isSynced && p.isAuthenticated && p.unsyncedChanges === 0;
  }

  /** The editor's tab dies: whatever was acknowledged must survive without this client. */
  crash() {
    this.sample();
    this.crashed = true;
    try {
      this.provider.destroy();
    } catch {
      // already gone
    }
  }

  /** The node this client was connected to at `at` (ms since start). */
  nodeAt(at) {
    let node = '?';
    for (const n of this.nodes) if (n.at <= at) node = n.node;
    return node;
  }

  state() {
    const p = this.provider;
    return `${this.label}@d${this.doc} status=${p.configuration.websocketProvider.status} auth=${p.isAuthenticated} synced=${p.isSynced} unsynced=${p.unsyncedChanges} pushed=${this.pushed} acked=${this.acked} opens=${this.opens}`;
  }
}
