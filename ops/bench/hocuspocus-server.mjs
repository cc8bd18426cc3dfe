// The reference Hocuspocus server for ops/bench/compare.sh: @hocuspocus/server 4.7.0 with the
// SQLite extension, on loopback, accepting any token (the same Auth handshake zedi-bench does).
//   node hocuspocus-server.mjs PORT DB_PATH      (run from the folder that holds node_modules)
import { Server } from '@hocuspocus/server'
import { SQLite } from '@hocuspocus/extension-sqlite'

const port = Number(process.argv[2] || 1234)
const database = process.argv[3] || './hocuspocus.sqlite'

const server = new Server({
  port,
  address: '127.0.0.1',
  quiet: true,
  extensions: [new SQLite({ database })],
  async onAuthenticate() {
    return {} // any token is accepted
  },
})
await server.listen()
console.error(`hocuspocus 4.7.0 listening on 127.0.0.1:${port}, sqlite ${database}`)
const stop = async () => {
  await server.destroy()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
