/**
 * The job configuration: one object per job, read from a JS/TS module. Validated once, at the
 * edge, with every problem reported together as `path: message`. Each part is optional in the
 * schema; `requireFor(step)` then insists on what that step needs, so an extract host's config
 * need not name the replica and a load host's need not hold the source's password.
 */
import { z } from 'zod';
import { LOGICAL_TYPES } from '../db/types.js';

const dbSchema = z.object({
  client: z.string().min(1),
  connection: z.union([z.string().min(1), z.record(z.string(), z.unknown())]),
  schema: z.string().min(1).optional(),
});

const tableSchema = z
  .object({
    name: z.string().min(1),
    /** Key columns the replica upserts by; a single name or a list. */
    key: z
      .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
      .transform((k) => (typeof k === 'string' ? [k] : k)),
    mode: z.literal('logid').default('logid'),
    logIdColumn: z.string().min(1),
    /** Column types, used only by `simulate` to make synthetic rows without a source database. */
    columns: z.array(z.object({ name: z.string().min(1), type: z.enum(LOGICAL_TYPES) })).optional(),
  })
  .strict();

const destinationSchema = z
  .object({
    name: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, _ and - only (it names a state file)'),
    dir: z.string().min(1),
  })
  .strict();

export const jobSchema = z
  .object({
    /** The job's name: it prefixes state and lock files and is stamped into every manifest. */
    name: z.string().regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, _ and - only (it names files)'),
    stateDir: z.string().min(1).default('~/var/run/deltasync'),
    source: dbSchema.optional(),
    target: dbSchema.optional(),
    outbox: z.string().min(1).optional(),
    destinations: z.array(destinationSchema).optional(),
    inbox: z.string().min(1).optional(),
    tables: z.array(tableSchema).optional(),
    delta: z
      .object({
        maxRowsPerPart: z.number().int().positive().default(100_000),
        compression: z.enum(['gzip', 'none']).default('gzip'),
      })
      .strict()
      .prefault({}),
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
  status: [],
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
