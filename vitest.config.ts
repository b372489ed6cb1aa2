import { defineConfig } from 'vitest/config';

// Unit tests are pure and fast; integration tests run the real bins and real databases. Both
// run under `npm test`. Integration suites for a database that cannot be reached are skipped
// with a printed reason, unless DELTASYNC_REQUIRE_DBS=1 (CI), where they fail instead.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    reporters: ['default'],
  },
});
