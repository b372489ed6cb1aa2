// The demo job: a SQLite source and a SQLite replica under ./var/demo (made by `npm run demo`).
// Relative paths are resolved against this file's directory.
export default {
  name: 'demo',
  stateDir: '../var/demo/state',
  source: { client: 'sqlite', connection: { filename: '../var/demo/source.sqlite' } },
  target: { client: 'sqlite', connection: { filename: '../var/demo/replica.sqlite' } },
  outbox: '../var/demo/outbox',
  destinations: [{ name: 'replica', dir: '../var/demo/inbox' }],
  inbox: '../var/demo/inbox',
  // Parents before children: customers and products before the orders that point at them.
  tables: [
    { name: 'customers', key: ['id'], mode: 'logid', logIdColumn: 'log_id' },
    { name: 'products', key: ['id'], mode: 'logid', logIdColumn: 'log_id' },
    { name: 'orders', key: ['id'], mode: 'logid', logIdColumn: 'log_id' },
  ],
  delta: { maxRowsPerPart: 1000, compression: 'gzip' },
  log: { file: '../var/demo/deltasync.log' },
};
