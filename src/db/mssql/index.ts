/**
 * The SQL Server engine (mssql package, tedious driver). `src/db/index.ts` imports this module
 * only when a configuration names SQL Server: requiring mssql costs ~0.35 s.
 */
import type { EngineModule } from '../types.js';
import { MssqlSource } from './source.js';
import { MssqlTarget } from './target.js';

const mssql: EngineModule = {
  openSource: (config) => MssqlSource.open(config),
  openTarget: (config) => MssqlTarget.open(config),
};

export default mssql;
