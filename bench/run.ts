/**
 * `npm run bench`: the gateway and the reference registry (docker-registry, CNCF
 * distribution 2.8.2) side by side on loopback, in one run. BENCH_QUICK=1 shrinks sizes and
 * durations for a smoke run; BENCH_SKIP_BUILD=1 uses the existing dist/ without building.
 *
 * To add a benchmark, write a BenchCase (see bench/lib/suite.ts) and list it in CASES.
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { imageConfig, imageManifest, OciClient, sha256 } from './lib/client.js';
import { blobSeed, MiB, PatternBlob, RUN_ID } from './lib/data.js';
import { readCpuMs, readMemory, RssSampler, type RssReport } from './lib/rss.js';
import { buildGateway, findReferenceBinary, SetupError, startGateway, startReference, type Target } from './lib/servers.js';
import { closedLoop, inParallel, median, now, percentile, timed, windowedLoop, type LoadResult } from './lib/stats.js';
import { cosignSignature, sbomAttestation } from './lib/evidence.js';
import { Suite, type BenchCase, type CaseContext } from './lib/suite.js';
import { createDatabase, removeCluster, startCluster, type Cluster } from '../test/helpers/postgres.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const QUICK = /^(1|true|yes)$/i.test(process.env.BENCH_QUICK ?? '');

const SIZES = QUICK
  ? {
      bigBlob: 32 * MiB,
      smallBlob: 8 * MiB,
      bigReps: 1,
      chunk: 8 * MiB,
      loadMs: 700,
      loadWindows: 2,
      warmupMs: 200,
      sustainMs: 3000,
      sustainWindows: 2,
      jitWarmupMs: 500,
      concurrency: [1, 16, 64],
      tags: 1000,
      tagListMs: 700,
      parallelPushes: 8,
      parallelBlob: 4 * MiB,
      parallelReps: 1,
      imageLayers: 5,
      layerSize: 4 * MiB,
      images: 2,
      imageWarmups: 1,
      scanImages: 3,
    }
  : {
      bigBlob: 256 * MiB,
      smallBlob: 32 * MiB,
      bigReps: 5,
      chunk: 8 * MiB,
      loadMs: 3000,
      loadWindows: 4,
      warmupMs: 1000,
      sustainMs: 40_000,
      sustainWindows: 8,
      jitWarmupMs: 10_000,
      concurrency: [1, 16, 64],
      tags: 1000,
      tagListMs: 3000,
      parallelPushes: 8,
      parallelBlob: 32 * MiB,
      parallelReps: 5,
      imageLayers: 5,
      layerSize: 4 * MiB,
      images: 12,
      imageWarmups: 3,
      scanImages: 10,
    };

const GROUP = {
  blobs: 'Blob transfer',
  manifests: 'Manifests',
  tags: 'Tag listing',
  images: 'Concurrent pushes and images',
  memory: 'Memory (RSS of the server process)',
} as const;

const mib = (bytes: number) => `${bytes / MiB} MiB`;
const mibPerSecond = (bytes: number, ms: number) => bytes / MiB / (ms / 1000);

/** Blobs are the same bytes for both targets (digest computed once), different per run. */
const blobCache = new Map<string, PatternBlob>();
function blob(size: number, ...seedParts: (string | number)[]): PatternBlob {
  const seed = blobSeed(...seedParts, size);
  let b = blobCache.get(seed);
  if (!b) {
    b = new PatternBlob(seed, size);
    blobCache.set(seed, b);
  }
  b.computeDigest();
  return b;
}

/** Pushes one config and one small layer; returns their descriptors for manifests. */
async function pushBaseImage(client: OciClient, repo: string): Promise<{ config: Descriptor; layer: Descriptor }> {
  const layerBlob = blob(64 * 1024, 'base-layer');
  await client.pushBlob(repo, layerBlob);
  const config = imageConfig('bench', [layerBlob.digest]);
  await client.pushBlob(repo, config);
  return { config: { digest: sha256(config), size: config.length }, layer: { digest: layerBlob.digest, size: layerBlob.size } };
}

interface Descriptor {
  digest: string;
  size: number;
}

/** Peak RSS while `what` ran, and its growth over the RSS when it started. */
function recordRss(ctx: CaseContext, what: string, report: RssReport): void {
  ctx.record({ group: GROUP.memory, label: `peak RSS, ${what}`, unit: 'MiB', better: 'lower', value: report.peakMiB });
  ctx.record({ group: GROUP.memory, label: `RSS growth (peak - start), ${what}`, unit: 'MiB', better: 'lower', value: report.peakMiB - report.beforeMiB });
}

/** A load's rate and its p50 and p99 latency under `label`. */
function recordLoad(ctx: CaseContext, label: string, res: LoadResult): void {
  ctx.record({ label, unit: 'req/s', better: 'higher', value: res.perSecond });
  ctx.record({ label: `${label} p50`, unit: 'ms', better: 'lower', value: res.p50Ms });
  ctx.record({ label: `${label} p99`, unit: 'ms', better: 'lower', value: res.p99Ms });
}

/**
 * Manifest PUTs at c=16 for SIZES.jitWarmupMs into a repository of their own, before a
 * registry's first measured manifest load. The gateway runs on V8, which compiles a function
 * with its optimising compiler only once it has run many times: on a fresh gateway, manifest
 * PUTs at c=1 went from about 165 to 240-320 per second over their first 10-15 s (some 3,000
 * PUTs; again so after a restart on the same data, so it is the process warming up, not the
 * database), where the reference, a Go binary, runs at its speed from its first request. The
 * manifest rows measure both at that steady state; the note keeps the cold start visible.
 */
async function warmManifestPuts(ctx: CaseContext, baseUrl: string, name: string): Promise<void> {
  const client = new OciClient(baseUrl, { maxSockets: 16 });
  try {
    const repo = ctx.repo(`${name}-warm`);
    const { config, layer } = await pushBaseImage(client, repo);
    const start = now();
    const finished: number[] = [];
    await closedLoop({ concurrency: 16, durationMs: SIZES.jitWarmupMs }, async (seq) => {
      await client.putManifest(repo, `w${seq}`, imageManifest(config, [layer], { 'bench.warm': `${name}-${seq}` }));
      finished.push(now() - start);
    });
    const perSecond = (from: number, to: number) => finished.filter((t) => t >= from && t < to).length / ((to - from) / 1000);
    const span = Math.min(1000, SIZES.jitWarmupMs / 2);
    ctx.note(
      `${name}: warm-up (not counted): ${finished.length} manifest PUTs at c=16 in ${(SIZES.jitWarmupMs / 1000).toFixed(1)} s, ` +
        `${perSecond(0, span).toFixed(0)}/s over the first ${span} ms, ${perSecond(SIZES.jitWarmupMs - span, SIZES.jitWarmupMs).toFixed(0)}/s over the last`,
    );
  } finally {
    client.close();
  }
}

/**
 * Distinct manifest PUTs by tag at concurrency `c` into a new repository `name`, after a
 * warm-up, with a client of their own: gateway-only cases measure gateways they start
 * themselves as well as their target.
 */
async function manifestPutsAt(ctx: CaseContext, baseUrl: string, c: number, name: string): Promise<LoadResult> {
  const client = new OciClient(baseUrl, { maxSockets: c });
  try {
    const repo = ctx.repo(name);
    const { config, layer } = await pushBaseImage(client, repo);
    return await closedLoop({ concurrency: c, durationMs: SIZES.loadMs, warmup: c * 2, warmupMs: SIZES.warmupMs }, async (seq) => {
      await client.putManifest(repo, `t${c}-${seq}`, imageManifest(config, [layer], { 'bench.seq': `${name}-${c}-${seq}` }));
    });
  } finally {
    client.close();
  }
}

// --- cases -------------------------------------------------------------------------------------

const memoryBaseline: BenchCase = {
  id: 'rss-small',
  title: `RSS before pushes and during a ${mib(SIZES.smallBlob)} monolithic push`,
  group: GROUP.memory,
  async run(ctx) {
    const client = ctx.client(1);
    const repo = ctx.repo('rss');
    const b = blob(SIZES.smallBlob, 'rss-small');
    const sampler = new RssSampler(ctx.target.pid).start();
    let report: RssReport;
    try {
      await client.pushBlob(repo, b);
    } finally {
      report = sampler.stop();
    }
    ctx.record({ label: 'RSS before pushes (idle after start)', unit: 'MiB', better: 'lower', value: report.beforeMiB });
    recordRss(ctx, `${mib(SIZES.smallBlob)} monolithic push`, report);
  },
};

const monolithicPush: BenchCase = {
  id: 'push-monolithic',
  title: `1. ${mib(SIZES.bigBlob)} monolithic push (POST + PUT ?digest=), median of ${SIZES.bigReps}`,
  group: GROUP.blobs,
  async run(ctx) {
    const client = ctx.client(1);
    const repo = ctx.repo('mono');
    const rates: number[] = [];
    const sampler = new RssSampler(ctx.target.pid).start();
    try {
      for (let r = 0; r < SIZES.bigReps; r++) {
        const b = blob(SIZES.bigBlob, 'mono', r);
        await ctx.turn();
        const { ms } = await timed(() => client.pushBlob(repo, b));
        rates.push(mibPerSecond(b.size, ms));
      }
    } finally {
      recordRss(ctx, `${mib(SIZES.bigBlob)} monolithic push`, sampler.stop());
    }
    ctx.note(`rounds ${rates.map((r) => r.toFixed(0)).join(' ')} MiB/s`);
    ctx.record({ label: `${mib(SIZES.bigBlob)} monolithic push`, unit: 'MiB/s', better: 'higher', value: median(rates) });
  },
};

const chunkedPush: BenchCase = {
  id: 'push-chunked',
  title: `2. ${mib(SIZES.bigBlob)} chunked push (PATCH ${mib(SIZES.chunk)} chunks + PUT), median of ${SIZES.bigReps}`,
  group: GROUP.blobs,
  async run(ctx) {
    const client = ctx.client(1);
    const repo = ctx.repo('chunked');
    const rates: number[] = [];
    const sampler = new RssSampler(ctx.target.pid).start();
    try {
      for (let r = 0; r < SIZES.bigReps; r++) {
        const b = blob(SIZES.bigBlob, 'chunked', r);
        await ctx.turn();
        const { ms } = await timed(() => client.pushBlobChunked(repo, b, SIZES.chunk));
        rates.push(mibPerSecond(b.size, ms));
      }
    } finally {
      recordRss(ctx, `${mib(SIZES.bigBlob)} chunked push`, sampler.stop());
    }
    ctx.note(`rounds ${rates.map((r) => r.toFixed(0)).join(' ')} MiB/s`);
    ctx.record({ label: `${mib(SIZES.bigBlob)} chunked push (${mib(SIZES.chunk)} PATCHes)`, unit: 'MiB/s', better: 'higher', value: median(rates) });
  },
};

const pull: BenchCase = {
  id: 'pull',
  title: `3. ${mib(SIZES.bigBlob)} pull (GET, sha256 verified), median of ${SIZES.bigReps}`,
  group: GROUP.blobs,
  async run(ctx) {
    const client = ctx.client(1);
    const repo = ctx.repo('pull');
    const b = blob(SIZES.bigBlob, 'pull');
    await client.pushBlob(repo, b);
    const rates: number[] = [];
    const sampler = new RssSampler(ctx.target.pid).start();
    // The client hashes what it pulls: its own CPU says when it, not the server, sets the rate.
    let clientMs = 0;
    try {
      for (let r = 0; r < SIZES.bigReps; r++) {
        await ctx.turn();
        const clientCpu = process.cpuUsage();
        const { ms } = await timed(() => client.pullBlob(repo, b.digest, b.size));
        const { user, system } = process.cpuUsage(clientCpu);
        clientMs += (user + system) / 1000;
        rates.push(mibPerSecond(b.size, ms));
      }
    } finally {
      recordRss(ctx, `${mib(SIZES.bigBlob)} pull`, sampler.stop());
    }
    ctx.note(`client CPU per pull ${(clientMs / SIZES.bigReps).toFixed(0)} ms; rates ${rates.map((r) => r.toFixed(0)).join(' ')} MiB/s`);
    ctx.record({ label: `${mib(SIZES.bigBlob)} pull`, unit: 'MiB/s', better: 'higher', value: median(rates) });
  },
};

const manifestPut: BenchCase = {
  id: 'manifest-put',
  title: `4. manifest PUT by tag (distinct manifests), ${SIZES.loadMs} ms per concurrency in ${SIZES.loadWindows} windows taken in turns, after ${SIZES.warmupMs} ms of warm-up (and ${SIZES.jitWarmupMs / 1000} s at c=16 before the first)`,
  group: GROUP.manifests,
  async run(ctx) {
    await warmManifestPuts(ctx, ctx.target.baseUrl, ctx.target.kind);
    const setup = ctx.client(1);
    const repo = ctx.repo('mput');
    const { config, layer } = await pushBaseImage(setup, repo);
    for (const c of SIZES.concurrency) {
      const client = ctx.client(c);
      const load = { concurrency: c, durationMs: SIZES.loadMs, warmup: c * 2, warmupMs: SIZES.warmupMs };
      const res = await windowedLoop(load, SIZES.loadWindows, () => ctx.turn(), async (seq) => {
        const body = imageManifest(config, [layer], { 'bench.seq': `${c}-${seq}` });
        await client.putManifest(repo, `c${c}-${seq}`, body);
      });
      recordLoad(ctx, `manifest PUT c=${c}`, res);
    }
  },
};

/**
 * Whether the manifest PUT rate holds as a repository grows: PUTs at c=16 into one new
 * repository for 40 s, then the rate over the next 3 s. A plan that scans
 * what the repository already holds, or a table that keeps its dead rows, shows here.
 * Both phases are split into windows taken in turns, as in row 4: a registry paused
 * between its windows (SIGSTOP) holds the same repository when it resumes, and a slow
 * minute of the machine falls on both registries instead of on one 43 s turn.
 */
const sustainedPut: BenchCase = {
  id: 'manifest-put-sustained',
  title: `4a. sustained manifest PUT at c=16: the rate after ${SIZES.sustainMs / 1000} s of PUTs into one repository (${SIZES.sustainWindows} windows, then ${SIZES.loadWindows}, taken in turns)`,
  group: GROUP.manifests,
  async run(ctx) {
    const client = ctx.client(16);
    const repo = ctx.repo('sustain');
    const { config, layer } = await pushBaseImage(client, repo);
    const put = (phase: string) => async (seq: number) => {
      await client.putManifest(repo, `${phase}${seq}`, imageManifest(config, [layer], { 'bench.seq': `${phase}${seq}` }));
    };
    const turn = () => ctx.turn();
    const first = await windowedLoop({ concurrency: 16, durationMs: SIZES.sustainMs }, SIZES.sustainWindows, turn, put('s'));
    const last = await windowedLoop({ concurrency: 16, durationMs: SIZES.loadMs, warmup: 16 }, SIZES.loadWindows, turn, put('t'));
    ctx.record({ label: 'manifest PUT c=16, first window (new repository)', unit: 'req/s', better: 'higher', value: first.perSecond });
    ctx.record({ label: 'manifest PUT c=16, after the first window', unit: 'req/s', better: 'higher', value: last.perSecond });
    // nextSeq counts every PUT made, the windows' warm-up requests included.
    ctx.note(`${first.nextSeq} manifests in the repository before the last ${SIZES.loadMs} ms`);
  },
};

/**
 * The gate's cost on the push path: manifest PUTs against the gateway with the gate on (the
 * shipped warn-mode default policy of manifest rules) and against a second gateway with the
 * gate off. Only the gateway has a gate, so the reference column stays empty here.
 */
const gateOverhead: BenchCase = {
  id: 'gate-overhead',
  title: `4b. admission overhead: manifest PUT with the gate on vs off, ${SIZES.loadMs} ms per concurrency after ${SIZES.warmupMs} ms of warm-up (and ${SIZES.jitWarmupMs / 1000} s at c=16 for each gateway first)`,
  group: GROUP.manifests,
  async run(ctx) {
    if (ctx.target.kind !== 'gateway') return;
    const off = await startGateway(REPO_ROOT, { GATEWAY_GATE_ENABLED: 'false' });
    try {
      // The second gateway starts cold; the first is warm after rows 4 and 4a, unless run alone.
      await warmManifestPuts(ctx, ctx.target.baseUrl, 'gate-on');
      await warmManifestPuts(ctx, off.baseUrl, 'gate-off');
      for (const c of [1, 16]) {
        const rates: Record<string, number> = {};
        for (const [name, base] of [['on', ctx.target.baseUrl], ['off', off.baseUrl]] as const) {
          const res = await manifestPutsAt(ctx, base, c, `gate-${name}`);
          rates[name] = res.perSecond;
          recordLoad(ctx, `manifest PUT c=${c}, gate ${name}`, res);
        }
        ctx.note(`c=${c}: gate on runs at ${((rates.on / rates.off) * 100).toFixed(0)}% of the gate-off rate`);
      }
    } finally {
      await off.stop();
    }
  },
};

/**
 * The vulnerability gate's cost per image: manifest PUT latency on a gateway whose policy
 * has a vulnerabilities rule, with the Trivy stand-in as scanner (a real scan takes seconds
 * to minutes; this measures the gateway's own work: writing the OCI layout, running the
 * process, parsing, caching, deciding), against the cache-hit path (the same image pushed
 * under another tag) and the gateway without a scan rule.
 */
const scanOverhead: BenchCase = {
  id: 'scan-overhead',
  title: `4c. vulnerability scan overhead per image (Trivy stand-in), ${SIZES.scanImages} images`,
  group: GROUP.manifests,
  async run(ctx) {
    if (ctx.target.kind !== 'gateway') return;
    const work = mkdtempSync(path.join(os.tmpdir(), 'bench-scan-'));
    const policies = path.join(work, 'policies');
    const cacheDir = path.join(work, 'trivy-cache');
    const control = path.join(work, 'control');
    for (const dir of [policies, path.join(cacheDir, 'db'), control]) mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(cacheDir, 'db', 'trivy.db'), '');
    writeFileSync(path.join(cacheDir, 'db', 'metadata.json'), JSON.stringify({ Version: 2, UpdatedAt: '2026-11-20T00:00:00Z' }));
    writeFileSync(path.join(control, 'behaviour.json'), JSON.stringify({ mode: 'report', report: 'centos-7.json' }));
    writeFileSync(path.join(policies, 'scan.json'), JSON.stringify({
      name: 'scan', repositories: ['**'], mode: 'enforce',
      rules: [{ id: 'no-criticals', type: 'vulnerabilities', maxCount: { CRITICAL: 0 } }],
    }));
    const scanning = await startGateway(REPO_ROOT, {
      GATEWAY_POLICY_DIR: policies,
      GATEWAY_POLICY_DEFAULT_POLICY: 'scan',
      GATEWAY_SCANNER_TRIVY_PATH: path.join(REPO_ROOT, 'test', 'fixtures', 'trivy', 'trivy-standin.mjs'),
      GATEWAY_SCANNER_CACHE_DIR: cacheDir,
      GATEWAY_GATE_PUT_WAIT_SECONDS: '30',
      TRIVY_STANDIN_DIR: control,
    });
    try {
      const measure = async (base: string, name: string, repeat: boolean) => {
        const client = new OciClient(base, { maxSockets: 1 });
        const times: number[] = [];
        try {
          for (let i = 0; i < SIZES.scanImages; i++) {
            const repo = ctx.repo(`scan-${name}`);
            const { config, layer } = await pushBaseImage(client, repo);
            const body = imageManifest(config, [layer], { 'bench.seq': `${name}-${i}` });
            if (repeat) await client.putManifest(repo, 'first', body);
            const t0 = now();
            await client.putManifest(repo, repeat ? 'again' : 'v1', body);
            times.push(now() - t0);
          }
        } finally {
          client.close();
        }
        return median(times);
      };
      ctx.record({ label: 'manifest PUT, scan rule, cache miss (stand-in scan)', unit: 'ms', better: 'lower', value: await measure(scanning.baseUrl, 'miss', false) });
      ctx.record({ label: 'manifest PUT, scan rule, cache hit', unit: 'ms', better: 'lower', value: await measure(scanning.baseUrl, 'hit', true) });
      ctx.record({ label: 'manifest PUT, no scan rule', unit: 'ms', better: 'lower', value: await measure(ctx.target.baseUrl, 'none', false) });
    } finally {
      await scanning.stop();
      rmSync(work, { recursive: true, force: true });
    }
  },
};

/**
 * Admission latency under a policy that needs a signature and a signed SBOM: the image is
 * pushed (pending), its cosign signature arrives (still pending), then its SBOM attestation
 * (verified, evaluated, committed): the time of that last PUT is the admission latency.
 */
const signedAdmission: BenchCase = {
  id: 'signed-admission',
  title: `4d. admission latency with a signature + SBOM policy, ${SIZES.scanImages * 3} images`,
  group: GROUP.manifests,
  async run(ctx) {
    if (ctx.target.kind !== 'gateway') return;
    const work = mkdtempSync(path.join(os.tmpdir(), 'bench-signed-'));
    const policies = path.join(work, 'policies');
    mkdirSync(path.join(policies, 'keys'), { recursive: true });
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    writeFileSync(path.join(policies, 'keys', 'ci.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
    writeFileSync(path.join(policies, 'signed.json'), JSON.stringify({
      name: 'signed', repositories: ['**'], mode: 'enforce',
      rules: [
        { id: 'signed-by-ci', type: 'signature', keys: ['keys/ci.pub'] },
        { id: 'sbom', type: 'attestation', predicateTypes: ['https://spdx.dev/Document'], signedBy: 'signed-by-ci' },
      ],
    }));
    const gated = await startGateway(REPO_ROOT, { GATEWAY_POLICY_DIR: policies, GATEWAY_POLICY_DEFAULT_POLICY: 'signed' });
    const client = new OciClient(gated.baseUrl, { maxSockets: 1 });
    try {
      const latencies: number[] = [];
      for (let i = 0; i < SIZES.scanImages * 3; i++) {
        const repo = ctx.repo('signed');
        const { config, layer } = await pushBaseImage(client, repo);
        const image = imageManifest(config, [layer], { 'bench.seq': String(i) });
        const digest = await client.putManifest(repo, 'v1', image);
        const tag = `sha256-${digest.split(':')[1]}`;
        const signature = cosignSignature(privateKey, digest, `gateway.local/${repo}`);
        for (const b of signature.blobs) await client.pushBlob(repo, b);
        await client.putManifest(repo, `${tag}.sig`, signature.manifest);
        const attestation = sbomAttestation(privateKey, digest, 200);
        for (const b of attestation.blobs) await client.pushBlob(repo, b);
        const t0 = now();
        await client.putManifest(repo, `${tag}.att`, attestation.manifest);
        latencies.push(now() - t0);
        const admitted = await client.request('GET', `/gateway/v1/admissions/${digest}?repository=${repo}`);
        const state = (JSON.parse(admitted.body.toString('utf8')) as { state: string }).state;
        if (state !== 'admitted') throw new Error(`image ${i} is ${state} after its signature and SBOM arrived`);
      }
      latencies.sort((a, b) => a - b);
      ctx.record({ label: 'admission on the last evidence PUT (signature + 200-package SBOM) p50', unit: 'ms', better: 'lower', value: percentile(latencies, 50) });
      ctx.record({ label: 'admission on the last evidence PUT (signature + 200-package SBOM) p99', unit: 'ms', better: 'lower', value: percentile(latencies, 99) });
    } finally {
      client.close();
      await gated.stop();
      rmSync(work, { recursive: true, force: true });
    }
  },
};

/**
 * Manifest PUTs with the gateway on PostgreSQL, the database for production: a local
 * cluster with the server's defaults (fsync and synchronous_commit on), started for this
 * row. Only the gateway has a database to choose, so the reference column stays empty;
 * row 4 has both registries with the gateway on its embedded default.
 */
const postgresPut: BenchCase = {
  id: 'manifest-put-postgres',
  title: `4e. manifest PUT with the gateway on PostgreSQL (local cluster, server defaults), ${SIZES.loadMs} ms per concurrency after ${SIZES.warmupMs} ms of warm-up (and ${SIZES.jitWarmupMs / 1000} s at c=16 first)`,
  group: GROUP.manifests,
  async run(ctx) {
    if (ctx.target.kind !== 'gateway') return;
    let cluster: Cluster;
    try {
      cluster = await startCluster({ durable: true });
    } catch (err) {
      ctx.note(`not measured: no PostgreSQL cluster could be started here (${(err as Error).message.split('\n')[0]})`);
      return;
    }
    try {
      const gateway = await startGateway(REPO_ROOT, { GATEWAY_DATABASE_URL: await createDatabase(cluster, 'bench') });
      try {
        await warmManifestPuts(ctx, gateway.baseUrl, 'postgres');
        for (const c of SIZES.concurrency) recordLoad(ctx, `manifest PUT on PostgreSQL c=${c}`, await manifestPutsAt(ctx, gateway.baseUrl, c, 'postgres'));
      } finally {
        await gateway.stop();
      }
    } finally {
      await removeCluster(cluster);
    }
  },
};

const manifestRead: BenchCase = {
  id: 'manifest-read',
  title: `5. manifest GET and HEAD (half by tag, half by digest), ${SIZES.loadMs} ms per concurrency and method in ${SIZES.loadWindows} windows taken in turns, after ${SIZES.warmupMs} ms of warm-up`,
  group: GROUP.manifests,
  async run(ctx) {
    const setup = ctx.client(8);
    const repo = ctx.repo('mget');
    const { config, layer } = await pushBaseImage(setup, repo);
    const count = 32;
    const manifests: { tag: string; digest: string; size: number }[] = [];
    for (let i = 0; i < count; i++) {
      const body = imageManifest(config, [layer], { 'bench.seq': String(i) });
      const tag = `m${i}`;
      manifests.push({ tag, digest: await setup.putManifest(repo, tag, body), size: body.length });
    }
    for (const method of ['GET', 'HEAD'] as const) {
      for (const c of SIZES.concurrency) {
        const client = ctx.client(c);
        const load = { concurrency: c, durationMs: SIZES.loadMs, warmup: c * 2, warmupMs: SIZES.warmupMs };
        const res = await windowedLoop(load, SIZES.loadWindows, () => ctx.turn(), async (seq) => {
          const m = manifests[seq % count];
          const byDigest = Math.floor(seq / count) % 2 === 1;
          const reference = byDigest ? m.digest : m.tag;
          if (method === 'GET') {
            const r = await client.getManifest(repo, reference);
            if (r.bytes !== m.size) throw new Error(`GET /v2/${repo}/manifests/${reference}: ${r.bytes} bytes, expected ${m.size}`);
          } else {
            const r = await client.headManifest(repo, reference);
            const digest = r.headers['docker-content-digest'];
            if (digest !== m.digest) throw new Error(`HEAD /v2/${repo}/manifests/${reference}: Docker-Content-Digest ${String(digest)}, expected ${m.digest}`);
          }
        });
        recordLoad(ctx, `manifest ${method} c=${c}`, res);
      }
    }
  },
};

const tagListing: BenchCase = {
  id: 'tags',
  title: `6. tag listing of ${SIZES.tags} tags (whole list; n=100 pages via Link; one keep-alive connection read by hand), ${SIZES.tagListMs} ms each`,
  group: GROUP.tags,
  async run(ctx) {
    const setup = ctx.client(16);
    const repo = ctx.repo('tags');
    const { config, layer } = await pushBaseImage(setup, repo);
    const body = imageManifest(config, [layer]);
    const tagName = (i: number) => `t${String(i).padStart(5, '0')}`;
    await setup.putManifest(repo, tagName(0), body);
    const setupStart = now();
    await inParallel(SIZES.tags - 1, 16, async (i) => {
      await setup.putManifest(repo, tagName(i + 1), body);
    });
    ctx.note(`set-up: ${SIZES.tags - 1} tag PUTs at concurrency 16 took ${((now() - setupStart) / 1000).toFixed(2)} s`);

    // Listings are read over one lean keep-alive connection (bench/lib/client.ts, LeanConnection):
    // through node:http the client's CPU per request was more than the gateway's, and ten pages
    // measured the bench's HTTP client ten times.
    const client = ctx.client(1);
    const expectTags = (tags: string[], what: string) => {
      if (tags.length !== SIZES.tags) throw new Error(`${what}: ${tags.length} tags, expected ${SIZES.tags}`);
    };
    await ctx.turn();
    const whole = await closedLoop({ concurrency: 1, durationMs: SIZES.tagListMs, warmup: 3 }, async () => {
      expectTags((await client.listTags(repo, undefined, { lean: true })).tags, `GET /v2/${repo}/tags/list`);
    });
    ctx.record({ label: `tags/list, ${SIZES.tags} tags, one request`, unit: 'ms', better: 'lower', value: whole.p50Ms });
    ctx.record({ label: `tags/list, ${SIZES.tags} tags, one request`, unit: 'req/s', better: 'higher', value: whole.perSecond });

    let pagesSeen = 0;
    let largestPage = 0;
    let listings = 0;
    await ctx.turn();
    // Whose CPU a listing costs, the client's or the server's: the gateway's ten pages are ten round trips.
    const clientCpu = process.cpuUsage();
    const serverCpu = readCpuMs(ctx.target.pid);
    const paged = await closedLoop({ concurrency: 1, durationMs: SIZES.tagListMs, warmup: 1 }, async () => {
      const res = await client.listTags(repo, 100, { lean: true });
      expectTags(res.tags, `GET /v2/${repo}/tags/list?n=100 (all pages)`);
      pagesSeen = res.pages;
      largestPage = res.largestPage;
      listings++;
    });
    const serverMs = readCpuMs(ctx.target.pid) - serverCpu;
    const { user, system } = process.cpuUsage(clientCpu);
    ctx.record({
      label: `tags/list?n=100, all pages`,
      unit: 'ms per full listing',
      better: 'lower',
      value: paged.p50Ms,
      footnote:
        largestPage > 100 ? `ignores n=100: ${pagesSeen} page(s), up to ${largestPage} tags in one, so this is not a paginated figure` : undefined,
    });
    ctx.note(`n=100 listing took ${pagesSeen} request(s), largest page ${largestPage} tags`);
    ctx.note(
      `n=100 listing: CPU per full listing: client ${((user + system) / 1000 / listings).toFixed(3)} ms, server ${(serverMs / listings).toFixed(3)} ms (${listings} listings)`,
    );
  },
};

const concurrentPushes: BenchCase = {
  id: 'concurrent-pushes',
  title: `7. ${SIZES.parallelPushes} concurrent ${mib(SIZES.parallelBlob)} monolithic pushes (sent from memory), median of ${SIZES.parallelReps} after a warm-up round`,
  group: GROUP.images,
  async run(ctx) {
    const client = ctx.client(SIZES.parallelPushes);
    const repo = ctx.repo('parallel');
    const rates: number[] = [];
    // Round 0 warms both servers up (JIT, buffers, threads) and is not counted; its rate is noted.
    const reps = Array.from({ length: SIZES.parallelReps + 1 }, (_, r) =>
      Array.from({ length: SIZES.parallelPushes }, (_, i) => blob(SIZES.parallelBlob, 'parallel', r, i)),
    );
    // As in the image row, each round's blobs are written into these buffers before it is
    // timed, as a client sends files: the bench and both registries share two cores, and making
    // 256 MiB on the fly took CPU from whichever registry was being timed.
    const buffers = Array.from({ length: SIZES.parallelPushes }, () => Buffer.allocUnsafe(SIZES.parallelBlob));
    const sampler = new RssSampler(ctx.target.pid).start();
    try {
      for (const blobs of reps) {
        await ctx.turn();
        const bodies = blobs.map((b, i) => b.fill(buffers[i] as Buffer));
        const { ms } = await timed(() => Promise.all(blobs.map((b, i) => client.pushBlob(repo, b, bodies[i]))));
        rates.push(mibPerSecond(SIZES.parallelPushes * SIZES.parallelBlob, ms));
      }
    } finally {
      recordRss(ctx, `${SIZES.parallelPushes} concurrent ${mib(SIZES.parallelBlob)} pushes`, sampler.stop());
    }
    const warmup = rates.shift() as number;
    ctx.note(`warm-up round ${warmup.toFixed(0)} MiB/s (not counted); rounds ${rates.map((r) => r.toFixed(0)).join(' ')} MiB/s`);
    ctx.record({
      label: `${SIZES.parallelPushes} x ${mib(SIZES.parallelBlob)} concurrent pushes, aggregate`,
      unit: 'MiB/s',
      better: 'higher',
      value: median(rates),
    });
  },
};

const imagePush: BenchCase = {
  id: 'image-push',
  title: `8. ${SIZES.imageLayers}-layer image push (${mib(SIZES.layerSize)} layers sent from memory; HEAD, upload, then manifest), ${SIZES.images} images after ${SIZES.imageWarmups} warm-up image(s)`,
  group: GROUP.images,
  async run(ctx) {
    const client = ctx.client(1);
    const repo = ctx.repo('image');
    // The first images warm both servers up (JIT, buffers) and are not counted; their times are
    // noted. With one, the gateway's first counted image took 105-206 ms against 75-145 for the
    // others (15 full runs): the image path's code was still being optimised, and a full
    // collection of the heap the earlier rows left fell in it.
    const images = Array.from({ length: SIZES.imageWarmups + SIZES.images }, (_, i) => {
      const layers = Array.from({ length: SIZES.imageLayers }, (_, j) => blob(SIZES.layerSize, 'image', i, j));
      const config = imageConfig(`image-${i}`, layers.map((l) => l.digest));
      const manifest = imageManifest(
        { digest: sha256(config), size: config.length },
        layers.map((l) => ({ digest: l.digest, size: l.size })),
      );
      return { layers, config, manifest };
    });
    // A client sends a layer from a file, not as it makes it: each image's layers are written
    // into these buffers before its timed round, so that the round times the registry (making
    // them on the fly, 1 MiB at a time, added some 7-11 ms per image to either registry).
    const buffers = Array.from({ length: SIZES.imageLayers }, () => Buffer.allocUnsafe(SIZES.layerSize));
    const perImage: number[] = [];
    for (const [i, image] of images.entries()) {
      await ctx.turn();
      const bodies = image.layers.map((l, j) => l.fill(buffers[j] as Buffer));
      const { ms } = await timed(async () => {
        for (const [j, layer] of image.layers.entries()) {
          if (!(await client.blobExists(repo, layer.digest))) await client.pushBlob(repo, layer, bodies[j]);
        }
        if (!(await client.blobExists(repo, sha256(image.config)))) await client.pushBlob(repo, image.config);
        await client.putManifest(repo, `v${i}`, image.manifest);
      });
      perImage.push(ms);
    }
    const warmups = perImage.splice(0, SIZES.imageWarmups);
    // The images' own times: between them the other registry took its turn.
    const total = perImage.reduce((a, b) => a + b, 0);
    ctx.note(`warm-up images ${warmups.map((ms) => ms.toFixed(0)).join(' ')} ms (not counted); images ${perImage.map((ms) => ms.toFixed(0)).join(' ')} ms`);
    ctx.record({ label: `${SIZES.imageLayers}-layer image push`, unit: 'ms per image', better: 'lower', value: median(perImage) });
    ctx.record({ label: `${SIZES.imageLayers}-layer image push`, unit: 'images/s', better: 'higher', value: (SIZES.images / total) * 1000 });
  },
};

const memoryEnd: BenchCase = {
  id: 'rss-end',
  title: 'RSS at the end of the run',
  group: GROUP.memory,
  async run(ctx) {
    const m = readMemory(ctx.target.pid);
    if (!m) throw new Error(`cannot read /proc/${ctx.target.pid}/status`);
    ctx.record({ label: 'RSS at end of run', unit: 'MiB', better: 'lower', value: m.rssKiB / 1024 });
  },
};

const CASES: BenchCase[] = [
  memoryBaseline,
  monolithicPush,
  chunkedPush,
  pull,
  manifestPut,
  sustainedPut,
  gateOverhead,
  scanOverhead,
  signedAdmission,
  postgresPut,
  manifestRead,
  tagListing,
  concurrentPushes,
  imagePush,
  memoryEnd,
];

// --- main ----------------------------------------------------------------------------------------

function describeEnvironment(referenceVersion: string): string {
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    // not a git checkout
  }
  const cpus = os.cpus();
  return [
    `bench run ${RUN_ID}${QUICK ? ' (BENCH_QUICK: reduced sizes)' : ''}`,
    `node ${process.version}, ${cpus.length} x ${cpus[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 1024 ** 3)} GiB RAM, ${os.platform()} ${os.release()}`,
    `gateway: ${REPO_ROOT} at ${commit} (working tree as built), PGlite, auth off, log level warn`,
    `reference: ${referenceVersion}, filesystem storage, log level error, access log off`,
    `client: node:http keep-alive agents (a pull: a connection of its own, read into a reused 4 MiB buffer), same code for both, GLIBC_TUNABLES=${process.env.GLIBC_TUNABLES ?? '(unset)'} (as both registries); the registries take turns within each row (reference, gateway, reference, ...), one timed round each, with dirty pages written out at each turn`,
  ].join('\n');
}

async function main(): Promise<number> {
  const reference = findReferenceBinary();
  if (!/^(1|true|yes)$/i.test(process.env.BENCH_SKIP_BUILD ?? '')) {
    process.stdout.write('building the gateway (npm run build)...\n');
    buildGateway(REPO_ROOT);
  }
  process.stdout.write(`${describeEnvironment(reference.version)}\n`);

  const suite = new Suite({
    quick: QUICK,
    start: (kind): Promise<Target> => (kind === 'gateway' ? startGateway(REPO_ROOT) : startReference(reference.bin)),
  });
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stdout.write('\ninterrupted: stopping the registries and deleting their data...\n');
    void suite.stopAll().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const started = now();
  try {
    // BENCH_ONLY=id,id runs some cases (ids as in CASES), for working on one figure.
    const only = (process.env.BENCH_ONLY ?? '').split(',').filter(Boolean);
    await suite.run(only.length > 0 ? CASES.filter((c) => only.includes(c.id)) : CASES);
  } finally {
    await suite.stopAll();
  }
  const groupOrder = Object.values(GROUP);
  const groupOf = (id: string) => CASES.find((c) => c.id === id)?.group ?? '';
  process.stdout.write(`\n${'='.repeat(100)}\nResults (${((now() - started) / 1000).toFixed(0)} s)\n\n`);
  process.stdout.write(`${suite.renderResults(groupOrder, groupOf)}\n`);
  return suite.failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof SetupError) process.stderr.write(`bench: ${err.message}\n`);
    else process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(2);
  },
);
