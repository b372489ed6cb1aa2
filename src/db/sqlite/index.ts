import type { EngineModule } from '../types.js';
import { openSqliteSource } from './source.js';
import { openSqliteTarget } from './target.js';

const sqlite: EngineModule = { openSource: openSqliteSource, openTarget: openSqliteTarget };
export default sqlite;
