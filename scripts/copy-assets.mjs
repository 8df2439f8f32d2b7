// Copies non-TypeScript files the compiled code reads at run time (SQL migrations) into dist/.
import { cpSync } from 'node:fs';
cpSync('src/db/migrations', 'dist/src/db/migrations', { recursive: true });
