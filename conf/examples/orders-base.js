// Shared settings of an "orders" job: what to sync and how, without hosts or passwords.
// A client's own config (conf/cli/<client>/…) imports this and adds where.
export default {
  tables: [
    // Parents before children, so foreign keys on the replica hold at every commit.
    { name: 'customers', key: ['id'], mode: 'logid', logIdColumn: 'log_id' },
    { name: 'orders', key: ['id'], mode: 'logid', logIdColumn: 'log_id' },
  ],
  delta: { maxRowsPerPart: 100000, compression: 'gzip' },
  log: { file: '~/var/log/deltasync/orders.log' },
};
