/**
 * The MySQL/MariaDB engine: `client: 'mysql' | 'mysql2' | 'mariadb'`, `connection` a URL
 * (`mysql://user:password@host:3306/db`) or mysql2 connection options. Loaded lazily by
 * `src/db/index.ts`, so mysql2 is only required when a job uses this engine.
 */
import type { DbConfig, EngineModule, SourceReader, TargetWriter } from '../types.js';
import { MysqlSource } from './source.js';
import { MysqlTarget } from './target.js';

const engine: EngineModule = {
  openSource: (config: DbConfig): Promise<SourceReader> => MysqlSource.open(config),
  openTarget: (config: DbConfig): Promise<TargetWriter> => MysqlTarget.open(config),
};

export default engine;
export { MysqlSource, MysqlTarget };
