// A TypeScript config: PostgreSQL source to PostgreSQL replica. Run with
//   deltasync-extract -c conf/examples/pg-to-pg.ts
import base from './orders-base.js';

export default {
  ...base,
  name: 'orders',
  source: { client: 'pg', connection: process.env.DELTASYNC_SOURCE_URL ?? 'postgres://deltasync_ro@127.0.0.1/shop' },
  target: { client: 'pg', connection: process.env.DELTASYNC_TARGET_URL ?? 'postgres://deltasync@127.0.0.1/replica' },
  outbox: '/srv/deltasync/orders/outbox',
  destinations: [{ name: 'replica', dir: '/mnt/replica/orders/inbox' }],
  inbox: '/mnt/replica/orders/inbox',
};
