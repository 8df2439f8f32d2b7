// Copies non-TypeScript files the compiled code reads at run time (SQL migrations) into dist/.
// The target is replaced, not merged: a migration removed or renamed in src/ must not linger
// in dist/ and run at the next start.
import { cpSync, rmSync } from 'node:fs';
rmSync('dist/src/db/migrations', { recursive: true, force: true });
cpSync('src/db/migrations', 'dist/src/db/migrations', { recursive: true });
