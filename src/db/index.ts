/**
 * Opens sources and targets by engine. Engine modules (and so their drivers) are imported only
 * when used: requiring every driver costs ~0.5 s, most of it mssql, and a cron run with nothing
 * to do must stay well under a second.
 */
import { ConfigError } from '../errors.js';
import type { DbConfig, EngineModule, EngineName, SourceReader, TargetWriter } from './types.js';

export * from './types.js';

/** knex-style client names and the engine each means. */
const CLIENT_ALIASES: Record<string, EngineName> = {
  sqlite: 'sqlite',
  sqlite3: 'sqlite',
  'better-sqlite3': 'sqlite',
  pg: 'pg',
  postgres: 'pg',
  postgresql: 'pg',
  mysql: 'mysql',
  mysql2: 'mysql',
  mariadb: 'mysql',
  mssql: 'mssql',
  sqlserver: 'mssql',
  tedious: 'mssql',
};

export const KNOWN_CLIENTS = Object.keys(CLIENT_ALIASES);

export function engineOf(client: string): EngineName {
  const engine = CLIENT_ALIASES[client.toLowerCase()];
  if (!engine) {
    throw new ConfigError(
      `unknown database client '${client}'; use one of: ${KNOWN_CLIENTS.join(', ')}`,
    );
  }
  return engine;
}

async function loadEngine(engine: EngineName): Promise<EngineModule> {
  switch (engine) {
    case 'sqlite':
      return (await import('./sqlite/index.js')).default;
    case 'pg':
      return (await import('./pg/index.js')).default;
    case 'mysql':
      return (await import('./mysql/index.js')).default;
    case 'mssql':
      return (await import('./mssql/index.js')).default;
  }
}

export async function openSource(config: DbConfig): Promise<SourceReader> {
  return (await loadEngine(engineOf(config.client))).openSource(config);
}

export async function openTarget(config: DbConfig): Promise<TargetWriter> {
  return (await loadEngine(engineOf(config.client))).openTarget(config);
}
