// Harness for the zedi-sync interop tests: start the server under test, create real
// @hocuspocus/provider clients and raw `ws` clients, wait with bounded loops, clean up everything.
//
// Environment:
//   ZEDI_BIN                 path of the zedi-sync binary (default: debug/zedi-sync in cargo's target
//                            directory, which honours CARGO_TARGET_DIR; scripts/test.sh sets it)
//   ZEDI_INTEROP_REFERENCE=1 run against the REAL @hocuspocus/server 4.7.0 instead (reference-server.mjs),
//                            installed on first use into ZEDI_REF_DIR (default <tmpdir>/hp-ref)
//   ZEDI_TEST_VERBOSE=1      forward the server's output live (otherwise only when a test fails)
//   ZEDI_INTEROP_NO_SKIP=1   in reference mode, also run the tests where the reference is known to differ

//
// The pieces live in lib/ (one topic each); this module re-exports them, so a suite imports
// everything from './harness.mjs'.

import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider';
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import WebSocket from 'ws';
import * as Y from 'yjs';

export { HocuspocusProvider, HocuspocusProviderWebsocket, WebSocket, Y, encoding, decoding };

export * from './lib/util.mjs';
export { cleanupAll, cleanupClients, makeDataDir, test } from './lib/tracking.mjs';
export * from './lib/daemon.mjs';
export * from './lib/providers.mjs';
export * from './lib/frames.mjs';
export * from './lib/services.mjs';
