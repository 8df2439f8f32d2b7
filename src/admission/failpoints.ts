/**
 * Crash points for tests of the commit sequence (and of a blob's flush after its record): `GATEWAY_FAILPOINTS=commit:after-blobs`
 * (comma-separated) makes the process kill itself with SIGKILL when it reaches that step,
 * as a power cut or an OOM kill would. Unset (always, outside tests) it does nothing.
 */
export type Failpoint = 'commit:after-blobs' | 'commit:after-manifests' | 'commit:before-switch' | 'blob:before-flush';

const armed = new Set((process.env.GATEWAY_FAILPOINTS ?? '').split(',').map((s) => s.trim()).filter(Boolean));

export function failpoint(name: Failpoint): void {
  if (armed.size > 0 && armed.has(name)) process.kill(process.pid, 'SIGKILL');
}
