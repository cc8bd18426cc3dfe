// @hocuspocus/provider clients of the server under test, created one way for every suite.

import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider';
import WebSocket from 'ws';
import * as Y from 'yjs';

import { track } from './tracking.mjs';
import { waitFor } from './util.mjs';

// ---------------------------------------------------------------------------------------------
// Providers
// ---------------------------------------------------------------------------------------------

/**
 * A ws WebSocket subclass that remembers its instances, so a test can kill the TCP socket of
 * a provider (`lastSocket(ws).terminate()`).
 */
export function trackingWebSocketClass() {
  const instances = [];
  class TrackedWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      instances.push(this);
    }
  }
  return { TrackedWebSocket, instances };
}

/** A HocuspocusProviderWebsocket (one socket that providers can share). */
export function createSocket({ url, ...options }) {
  const socket = new HocuspocusProviderWebsocket({
    url,
    WebSocketPolyfill: WebSocket,
    ...options,
  });
  return track({ socket, destroy: () => socket.destroy() }).socket;
}

/**
 * A HocuspocusProvider. With `websocketProvider` it is attached to that shared socket,
 * otherwise it gets its own socket (like `new HocuspocusProvider({ url, name })`).
 */
export function createProvider({ url, name, websocketProvider, document, token = null, ...options }) {
  const doc = document || new Y.Doc();
  let provider;
  if (websocketProvider) {
    provider = new HocuspocusProvider({ websocketProvider, name, document: doc, token, ...options });
    provider.attach();
  } else {
    provider = new HocuspocusProvider({
      url,
      name,
      document: doc,
      token,
      WebSocketPolyfill: WebSocket,
      ...options,
    });
  }
  track({ destroy: () => provider.destroy() });
  return provider;
}

export const text = (provider, field = 'default') => provider.document.getText(field).toString();

/** Describe a provider's state for timeout messages. */
export function providerState(provider, field = 'default') {
  const t = text(provider, field);
  return JSON.stringify({
    name: provider.configuration.name,
    status: provider.configuration.websocketProvider.status,
    authenticated: provider.isAuthenticated,
    synced: provider.isSynced,
    unsynced: provider.unsyncedChanges,
    text: t.length > 200 ? `${t.slice(0, 200)}… (${t.length} chars)` : t,
  });
}

/** Wait until the provider is authenticated, synced and has no unacknowledged changes. */
export function waitSynced(provider, { timeout = 10_000 } = {}) {
  return waitFor(() => provider.isAuthenticated && provider.isSynced && !provider.hasUnsyncedChanges, {
    timeout,
    message: `provider "${provider.configuration.name}" to be synced with no unsynced changes`,
    describe: () => providerState(provider),
  });
}

/** Wait until every provider's Y.Text `field` equals `expected` (or satisfies it, if a function). */
export function waitText(providers, expected, { field = 'default', timeout = 10_000 } = {}) {
  const list = Array.isArray(providers) ? providers : [providers];
  const ok = typeof expected === 'function' ? expected : (s) => s === expected;
  return waitFor(() => list.every((p) => ok(text(p, field))), {
    timeout,
    message: `text "${field}" to be ${typeof expected === 'function' ? 'as expected' : JSON.stringify(expected)}`,
    describe: () => list.map((p) => providerState(p, field)).join('\n    '),
  });
}

/**
 * The one provider setup of the suites: `createProvider` (a `url` or a shared
 * `websocketProvider`, `name`, `token`, a `WebSocketPolyfill` and any other provider option),
 * then wait until it is authenticated and synced.
 */
export async function openProvider(options, { timeout } = {}) {
  const provider = createProvider(options);
  await waitSynced(provider, { timeout });
  return provider;
}
