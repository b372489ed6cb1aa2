/**
 * Connection failures, for every engine: what cannot be reached, what does not exist, and a
 * connection lost mid-transaction are each an UnavailableError (exit 69) on one line that names
 * the server and database, never the password.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { openSource, openTarget } from '../../../src/db/index.js';
import { UnavailableError } from '../../../src/errors.js';
import { cleanup, engines } from './engines.js';

const ENGINES = await engines();
afterAll(() => cleanup(ENGINES));

describe.each(ENGINES.map((e) => [e.name, e] as const))('connections on %s', (_name, engine) => {
  describe.skipIf(!engine.available)(engine.server?.reason ?? '', () => {
    it.skipIf(!engine.unreachable)(
      'reports a server nothing listens on as UnavailableError naming it, not the password (not SQLite: no server)',
      async () => {
        for (const open of [openSource, openTarget]) {
          const err = await open(engine.unreachable!).then(
            () => null,
            (e: unknown) => e,
          );
          expect(err).toBeInstanceOf(UnavailableError);
          const message = (err as Error).message;
          expect(message).toContain('127.0.0.1:1/somedb');
          expect(message).not.toContain('s3cret');
          expect(message).not.toContain('\n');
        }
      },
    );

    it('reports a database that does not exist as UnavailableError', async () => {
      const db = await engine.fresh(`conn${engine.id}`);
      try {
        const config = engine.unknownDatabase(db);
        if (!config) return; // SQL Server given as an ADO string: no URL to change
        for (const open of [openSource, openTarget]) {
          const err = await open(config).catch((e: unknown) => e);
          expect(err).toBeInstanceOf(UnavailableError);
          expect((err as Error).message).not.toContain('\n');
          // PostgreSQL also says what to do about it.
          if (engine.id === 'pg')
            expect((err as UnavailableError).hint).toMatch(/create the database/);
        }
      } finally {
        await db.close();
      }
    });

    it.skipIf(engine.id === 'sqlite')(
      'reports a connection lost mid-transaction as UnavailableError (not SQLite: no server)',
      async () => {
        const db = await engine.fresh(`lost${engine.id}`);
        const target = await openTarget(db.config);
        try {
          await target.prepare();
          const err = await target
            .transaction(async (tx) => {
              await db.killOthers();
              await tx.appliedLogId('job');
            })
            .catch((e: unknown) => e);
          expect(err).toBeInstanceOf(UnavailableError);
        } finally {
          await target.close();
          await db.close();
        }
      },
    );
  });
});
