// Copies non-TypeScript files the compiled code reads at run time (SQL migrations) into dist/.
// The target is replaced, not merged: a migration removed or renamed in src/ must not linger
// in dist/ and run at the next start. The `gateway` bin is made executable (tsc writes 0644):
// `npx gateway` in a fresh checkout ran it as a script without the bit and was refused.
import { chmodSync, cpSync, rmSync } from 'node:fs';
rmSync('dist/src/db/migrations', { recursive: true, force: true });
cpSync('src/db/migrations', 'dist/src/db/migrations', { recursive: true });
chmodSync('dist/src/gateway.cjs', 0o755);
