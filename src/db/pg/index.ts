/** The PostgreSQL engine, loaded lazily by `src/db/index.ts` (see its note on startup time). */
import type { EngineModule } from '../types.js';
import { openPgSource } from './source.js';
import { openPgTarget } from './target.js';

const pg: EngineModule = { openSource: openPgSource, openTarget: openPgTarget };
export default pg;
