/**
 * The job configuration: one object per job, read from a JS/TS module. Validated once, at the
 * edge, with every problem reported together as `path: message`. Each part is optional in the
 * schema; `requireFor(step)` then insists on what that step needs, so an extract host's config
 * need not name the replica and a load host's need not hold the source's password.
 */
import { z } from 'zod';
import { LOGICAL_TYPES, type WireValue } from '../db/types.js';
import {
  parseStoreSpec,
  storeOptionsShape,
  storeSpecSchema,
  type StoreObjectSpec,
} from '../store/spec.js';

const dbSchema = z.object({
  client: z.string().min(1),
  connection: z.union([z.string().min(1), z.record(z.string(), z.unknown())]),
  schema: z.string().min(1).optional(),
});

/** A function in the config (configs are code). */
function fn<T>(what: string) {
  return z.custom<T>((v) => typeof v === 'function', `must be a function ${what}`);
}

/** A row as shaping functions see it: source column name -> wire value. */
export type ShapeRow = Record<string, WireValue>;

export const CAPTURE_MODES = ['logid', 'changelog', 'timestamp', 'snapshot'] as const;
export type CaptureMode = (typeof CAPTURE_MODES)[number];

const tableSchema = z
  .object({
    name: z.string().min(1),
    /** Key columns the replica upserts by; a single name or a list. */
    key: z
      .union([z.string().min(1), z.array(z.string().min(1)).min(1)], {
        error: 'required: a key column name, or a list of them',
      })
      .transform((k) => (typeof k === 'string' ? [k] : k)),
    /** How extract finds what changed: see "Capture modes" in the README. */
    mode: z.enum(CAPTURE_MODES).default('logid'),
    /** logid mode: the monotonically increasing change-id column. */
    logIdColumn: z.string().min(1).optional(),
    /** timestamp mode: the last-modified column. */
    timestampColumn: z.string().min(1).optional(),
    /** timestamp mode: where the very first run starts (a wire timestamp); default: the beginning. */
    startAt: z.string().min(1).optional(),
    /** The replica's table name, when it differs. */
    target: z.string().min(1).optional(),
    /** Source column -> replica column. */
    rename: z.record(z.string(), z.string().min(1)).optional(),
    /** Source columns never shipped. */
    exclude: z.array(z.string().min(1)).optional(),
    /** Rows for which this returns false are not shipped (deletes always are). */
    filter: fn<(row: ShapeRow) => boolean>('(row) => boolean').optional(),
    /** Replica columns computed from the source row. */
    computed: z
      .record(
        z.string(),
        z
          .object({
            type: z.enum(LOGICAL_TYPES),
            value: fn<(row: ShapeRow) => WireValue>('(row) => value'),
          })
          .strict(),
      )
      .optional(),
    /** Column types, used only by `simulate` to make synthetic rows without a source database. */
    columns: z.array(z.object({ name: z.string().min(1), type: z.enum(LOGICAL_TYPES) })).optional(),
  })
  .strict()
  .superRefine((t, ctx) => {
    const need = (key: 'logIdColumn' | 'timestampColumn', mode: CaptureMode) => {
      if (t.mode === mode && !t[key]) {
        ctx.addIssue({ code: 'custom', path: [key], message: `required when mode is '${mode}'` });
      }
      if (t.mode !== mode && t[key]) {
        ctx.addIssue({ code: 'custom', path: [key], message: `only used when mode is '${mode}'` });
      }
    };
    need('logIdColumn', 'logid');
    need('timestampColumn', 'timestamp');
    if (t.startAt && t.mode !== 'timestamp') {
      ctx.addIssue({
        code: 'custom',
        path: ['startAt'],
        message: "only used when mode is 'timestamp'",
      });
    }
  });

/**
 * Where copy publishes: `{ name, dir }` (a directory, as always) or `{ name, url, ...options }`
 * (an SFTP or S3 store, or `file:///path`; options in src/store/spec.ts).
 */
const destinationSchema = z
  .object({
    name: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, _ and - only (it names a state file)'),
    dir: z.string().min(1).optional(),
    url: z.string().min(1).optional(),
    ...storeOptionsShape,
  })
  .strict()
  .superRefine((d, ctx) => {
    if ((d.dir === undefined) === (d.url === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['dir'], message: 'give either dir or url' });
      return;
    }
    const { name: _name, dir, ...spec } = d;
    try {
      parseStoreSpec(dir === undefined ? (spec as StoreObjectSpec) : dir);
      if (dir !== undefined && Object.keys(spec).some((k) => k !== 'url'))
        throw new Error('store options go with url, not dir');
    } catch (err) {
      ctx.addIssue({
        code: 'custom',
        path: [dir === undefined ? 'url' : 'dir'],
        message: (err as Error).message,
      });
    }
  });

export const jobSchema = z
  .object({
    /** The job's name: it prefixes state and lock files and is stamped into every manifest. */
    name: z.string().regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, _ and - only (it names files)'),
    stateDir: z.string().min(1).default('~/var/run/deltasync'),
    /**
     * load: which replica of the job this config loads. Names load's state file and lock, so
     * that several replicas of one job can be loaded from one host with one stateDir.
     */
    replica: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, _ and - only (it names files)')
      .default('default'),
    /** How long extract and load wait for a lock on a source or replica table, then exit 69. */
    lockTimeoutSeconds: z.number().positive().max(86_400).default(60),
    source: dbSchema.optional(),
    target: dbSchema.optional(),
    /** Where extract publishes: a directory, a store URL, or `{ url, ...options }` (a store spec). */
    outbox: storeSpecSchema.optional(),
    destinations: z.array(destinationSchema).optional(),
    /** Where load reads from: a store spec, as `outbox`. */
    inbox: storeSpecSchema.optional(),
    tables: z.array(tableSchema).optional(),
    delta: z
      .object({
        maxRowsPerPart: z.number().int().positive().default(100_000),
        compression: z.enum(['gzip', 'none']).default('gzip'),
        /** A backlog larger than this becomes several deltas (snapshot tables are not counted). */
        maxRowsPerDelta: z.number().int().positive().optional(),
        /**
         * Extract writes an empty delta after this long without changes, so that the replica
         * side (status, metrics) can tell an idle source from a stalled pipeline.
         */
        heartbeatSeconds: z.number().positive().optional(),
      })
      .strict()
      .prefault({}),
    capture: z
      .object({
        /** The change-log table that `deltasync capture` creates and changelog mode reads. */
        changelogTable: z.string().min(1).default('deltasync_changelog'),
        /** logid/changelog: wait this long after taking the high-water mark, before reading. */
        settleLagSeconds: z.number().nonnegative().default(0),
        /** timestamp: only rows modified at least this long ago (server time) are read. */
        timestampLagSeconds: z.number().nonnegative().default(5),
        /** How long extract waits for transactions still running when it takes the high-water mark. */
        maxWaitSeconds: z.number().positive().default(30),
      })
      .strict()
      .prefault({}),
    /**
     * Shared secret for signed manifests (HMAC-SHA256). Extract signs with it; load then refuses
     * deltas that are unsigned or do not verify. Take it from the environment, never a file in git.
     */
    signingKey: z
      .string()
      .min(32, 'must be at least 32 characters (e.g. openssl rand -hex 32)')
      .optional(),
    /** Keys load still accepts while a rotation is under way (see the README). */
    previousSigningKeys: z.array(z.string().min(32, 'must be at least 32 characters')).optional(),
    /** 'config': tables in the order listed; 'foreign-keys': parents first, from the source's foreign keys. */
    tableOrder: z.enum(['config', 'foreign-keys']).default('config'),
    /** Runs after each delta commits on the replica; a failure sets exit code 70 but undoes nothing. */
    afterLoad: z
      .object({
        command: z.string().min(1).optional(),
        sql: z.string().min(1).optional(),
        timeoutSeconds: z.number().positive().default(600),
      })
      .strict()
      .refine((h) => h.command || h.sql, 'give command, sql, or both')
      .optional(),
    /** How load meets the replica's tables (README: "When the schema changes"). */
    load: z
      .object({
        /**
         * A column a delta carries that the replica table lacks: 'stop' before that delta (exit
         * 78, printing the ALTER TABLE to run), 'add' it to the replica, or 'skip' its values
         * (recorded in the load state file, shown by status).
         */
        missingColumns: z.enum(['stop', 'add', 'skip']).default('stop'),
        /**
         * PostgreSQL replica: batches (~8 MB of rows each) one delta's transaction may stage on
         * a second session, in UNLOGGED tables beside the target tables that take disk until
         * it commits; the rest load on one session. 0: always one session.
         */
        sharedStageBatches: z.number().int().min(0).max(100_000).default(32),
      })
      .strict()
      .prefault({}),
    /**
     * Pruning of what every reader has moved past (README "Retention"): `deltasync prune`, and
     * automatically after each successful extract, copy and load when this section is present.
     */
    retention: z
      .object({
        /** The newest this many deltas of each location are always kept. */
        keepDeltas: z.number().int().nonnegative().default(10),
        /** Deltas younger than this are always kept; 0 means no age minimum. */
        keepHours: z.number().nonnegative().default(24),
        /**
         * Extract also deletes the change-log rows it has shipped that are older than keepHours
         * (needs DELETE on the change log); otherwise `deltasync capture --prune` does, from cron.
         */
        changelog: z.boolean().default(false),
      })
      .strict()
      .optional(),
    /**
     * Prometheus metrics: every run of every step writes `<textfileDir>/deltasync_<job>_<step>.prom`
     * (node_exporter's textfile collector convention; README "### Monitoring").
     */
    metrics: z
      .object({ textfileDir: z.string().min(1) })
      .strict()
      .optional(),
    log: z
      .object({
        /** JSON lines are appended here; without it they go to stdout (pretty on a terminal). */
        file: z.string().min(1).optional(),
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine((job, ctx) => {
    const seen = new Set<string>();
    job.destinations?.forEach((d, i) => {
      if (seen.has(d.name))
        ctx.addIssue({
          code: 'custom',
          path: ['destinations', i, 'name'],
          message: `'${d.name}' is used twice`,
        });
      seen.add(d.name);
    });
    const tables = new Set<string>();
    job.tables?.forEach((t, i) => {
      if (tables.has(t.name))
        ctx.addIssue({
          code: 'custom',
          path: ['tables', i, 'name'],
          message: `table '${t.name}' is listed twice`,
        });
      tables.add(t.name);
    });
  });

export type JobConfig = z.infer<typeof jobSchema>;
export type TableConfig = NonNullable<JobConfig['tables']>[number];
export type DestinationConfig = NonNullable<JobConfig['destinations']>[number];

/** What each command needs from the config beyond `name`. */
export const STEP_NEEDS = {
  extract: ['source', 'outbox', 'tables'],
  copy: ['outbox', 'destinations'],
  load: ['target', 'inbox'],
  simulate: ['outbox', 'tables'],
  capture: ['source', 'tables'],
  verify: ['source', 'target', 'tables'],
  status: [],
  prune: [],
} as const satisfies Record<string, readonly (keyof JobConfig)[]>;

export type StepName = keyof typeof STEP_NEEDS;

/** Problems, as `key: message`, for the parts a step needs but the config lacks. */
export function missingFor(step: StepName, job: JobConfig): string[] {
  const problems: string[] = [];
  for (const key of STEP_NEEDS[step]) {
    const value = job[key];
    if (value === undefined || (Array.isArray(value) && value.length === 0)) {
      problems.push(`${key}: required by ${step}`);
    }
  }
  return problems;
}
