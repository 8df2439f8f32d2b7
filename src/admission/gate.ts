/**
 * The gate: every pushed manifest is staged; subjects get an admission evaluated against
 * the policy for their repository; evidence (signatures, attestations, referrers) is
 * indexed by subject and its arrival re-evaluates the subject. An admitted subject is
 * committed in the order blobs → manifests → visible switch, the switch, the decision and
 * its audit record in one transaction under a per-subject lock.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { Queryable } from '../db/database.js';
import type { ContentLocation } from '../db/metadata.js';
import type { AdmissionRecord, AdmissionStore } from '../db/admissions.js';
import type { Registry } from '../registry/registry.js';
import { EarlyAdmissionDeclined, type AdmissionDecision, type AdmissionRequest, type Admit, type AdmitEarly, type EarlyAdmission } from '../registry/admission.js';
import { contentDigestsOf, type ParsedManifest } from '../registry/manifest.js';
import type { Decision, Evidence, EvidenceItem, LoadedPolicy } from '../policy/types.js';
import { canonicalJson } from '../audit/canonical.js';
import type { AuditEvent, AuditLog } from '../audit/log.js';
import { failpoint } from './failpoints.js';
import type { ScanService } from '../scan/service.js';
import { verifyEvidenceManifest, type PolicyTrust, type VerifiedEvidence } from '../verify/evidence.js';
import type { ScanResult } from '../scan/report.js';
import type { ScanEvidence } from '../policy/rules/vulnerabilities.js';
import { classify, imageDigests, EvidenceReader, type ManifestNode, type Role } from './evidence.js';

/** Writes an audit record inside the caller's transaction; throwing fails the operation. */
export type AuditSink = Pick<AuditLog, 'append'>;

export interface GateOptions {
  registry: Registry;
  admissions: AdmissionStore;
  audit: AuditSink;
  /** The policy that applies to a repository (the configured default where none matches). */
  policyFor: (repository: string) => LoadedPolicy;
  evaluate: (policy: LoadedPolicy, evidence: Evidence, now: Date) => Decision;
  putWaitMs: number;
  logger: Logger;
  now?: () => Date;
  /** Vulnerability scans; absent = rules that need one fail with "no scanner is configured". */
  scans?: ScanService;
}

export interface Trigger {
  reason: 'push' | 'evidence' | 're-evaluate' | 'scan';
  tags?: string[];
  principal?: string | null;
  requestId?: string | null;
  /** The evidence manifest whose arrival caused this evaluation. */
  evidence?: string;
  /** The subject as just pushed (saves reading it back), whether it was new in the repository, and the states of its content. */
  pushed?: { manifest: ParsedManifest; size: number; firstPush: boolean; contentLocations?: ReadonlyMap<string, ContentLocation> };
}

export interface Outcome {
  record: AdmissionRecord;
  /** The decision this call made; null when a frozen verdict answered. */
  decision: Decision | null;
  /** Settles when background work this decision waits for (a scan) has been evaluated. */
  waitOn?: Promise<unknown>;
}

export class GateError extends Error {}

/** Rule types that read verified signatures and attestations. */
const EVIDENCE_RULES = new Set(['signature', 'attestation', 'packages', 'licenses']);
/** Largest signature payload, DSSE envelope or bundle read from an evidence manifest. */
const MAX_EVIDENCE_BLOB = 16 * 1024 * 1024;

export interface RescanReport {
  repository: string;
  digest: string;
  /** The verdict the current policy would give now (the admission itself does not change). */
  wouldBe: Decision['outcome'];
  reasons: string[];
  newFindings: string[];
  error: string | null;
  summary: ScanResult['summary'] | null;
}

export class Gate {
  private readonly reader: EvidenceReader;
  private readonly changes = new EventEmitter();
  /** Evaluations waiting for a running scan, by repository@digest. */
  private readonly rescanDecisions = new Map<string, Promise<unknown>>();
  private readonly now: () => Date;

  constructor(private readonly options: GateOptions) {
    this.reader = new EvidenceReader(options.registry);
    this.now = options.now ?? (() => new Date());
    this.changes.setMaxListeners(0);
  }

  /** The hook the registry calls after storing a manifest as staged. */
  readonly admit: Admit = (request) => this.onPush(request);

  /** The hook the registry calls before storing a manifest: a verdict that needs nothing but the manifest. */
  readonly admitEarly: AdmitEarly = (request) => this.decideEarly(request);

  /**
   * Decides a push before its manifest is stored, when that is all the policy needs: a subject
   * (not evidence) new in the repository (the registry checks), no index, no evidence pushed
   * ahead of it, and a policy whose rules all read the manifest alone (no signatures,
   * attestations or scans, which arrive or run after the push). Admitted: the registry stores it committed, with the admission and
   * the audit records, in one transaction (see EarlyAdmission), the blobs moved first as the
   * usual commit moves them. Anything else takes the usual path (null), which decides again.
   */
  private async decideEarly(request: AdmissionRequest): Promise<EarlyAdmission | null> {
    const { repository, digest, manifest, size } = request;
    if (size === undefined) return null;
    const loaded = this.options.policyFor(repository);
    if (!loaded.policy.rules.every((r) => r.type === 'manifest')) return null;
    if (classify(manifest, request.tags).kind === 'evidence') return null;
    const tree = await this.reader.subjectTree(repository, digest, { manifest, size });
    if (tree.nodes.length !== 1) return null;
    const items = await this.reader.evidenceFor(repository, digest);
    if (items.length > 0) return null;
    const decision = this.options.evaluate(loaded, { repository, subject: tree.facts, items, extra: {} }, this.now());
    if (decision.outcome !== 'admitted') return null;
    const trigger: Trigger = { reason: 'push', tags: request.tags, principal: request.principal, requestId: request.requestId };
    const moves = this.startBlobMoves(tree.nodes[0].contentDigests, request.contentLocations);
    const subject = { repository, digest, mediaType: tree.facts.mediaType, tags: request.tags, pushedBy: request.principal ?? null };
    return {
      decision: { outcome: 'admitted', committed: true, warnings: decision.warnings },
      beforeStore: (tx) => this.options.admissions.lockSubject(tx, repository, digest),
      afterStore: async (tx, repoId) => {
        if (!(await this.options.admissions.create(tx, repoId, subject, { decision, evidence: {} }))) throw new EarlyAdmissionDeclined(`${repository}@${digest} has an admission already`);
        await moves;
        failpoint('commit:before-switch'); // the switch is written, not yet committed
      },
      record: async (tx) => {
        await this.auditDecision(tx, repository, digest, decision, trigger);
        await this.options.audit.append(tx, commitRecord(repository, digest, trigger, [digest], request.tags.map((tag) => ({ tag, digest })), []));
      },
      committed: () => this.changed(repository, digest),
      abandoned: () => moves.catch(() => undefined),
    };
  }

  /**
   * Commit step 1 for a manifest whose bytes go into the database with its switch (so step 2
   * has nothing to move): its blobs into the committed area, started now and returned running
   * (already observed, see startMoves).
   */
  private startBlobMoves(contentDigests: string[], known?: ReadonlyMap<string, ContentLocation>): Promise<void> {
    const moves = (async () => {
      await this.options.registry.commitContent(contentDigests, known);
      failpoint('commit:after-blobs');
      failpoint('commit:after-manifests');
    })();
    moves.catch(() => undefined);
    return moves;
  }

  private async onPush(request: AdmissionRequest): Promise<AdmissionDecision> {
    const role = classify(request.manifest, request.tags);
    if (role.kind === 'evidence') return this.onEvidence(request, role);
    const started = Date.now();
    const trigger: Trigger = {
      reason: 'push',
      tags: request.tags,
      principal: request.principal,
      requestId: request.requestId,
      pushed:
        request.size === undefined
          ? undefined
          : { manifest: request.manifest, size: request.size, firstPush: Boolean(request.firstPush), contentLocations: request.contentLocations },
    };
    let outcome = await withDeadline(this.decide(request.repository, request.digest, trigger), this.options.putWaitMs, this.options.logger);
    if (!outcome) return { outcome: 'pending', waitingFor: ['the evaluation, still running'] };
    if (outcome.waitOn && outcome.record.state === 'pending') {
      // A scan is running: wait for its verdict as long as the push may wait.
      const left = this.options.putWaitMs - (Date.now() - started);
      if (left > 0 && (await withDeadline(outcome.waitOn, left, this.options.logger)) !== null) {
        const record = await this.options.admissions.get(request.repository, request.digest);
        if (record) outcome = { record, decision: null };
      }
    }
    return answer(outcome, Boolean(request.byDigest) && request.tags.length === 0);
  }

  /**
   * Evidence is recorded staged. It is committed at once when its subject is already
   * admitted (it never un-admits anything); it re-evaluates a pending subject; otherwise it
   * waits for its subject.
   */
  private async onEvidence(request: AdmissionRequest, role: Extract<Role, { kind: 'evidence' }>): Promise<AdmissionDecision> {
    const subject = await this.options.admissions.get(request.repository, role.subject);
    if (subject?.state === 'admitted') {
      await this.commitEvidence(request.repository, role.subject, request.digest, request);
      return { outcome: 'admitted', committed: true };
    }
    if (subject?.state === 'pending') {
      const trigger: Trigger = { reason: 'evidence', evidence: request.digest, principal: request.principal, requestId: request.requestId };
      const outcome = await withDeadline(this.decide(request.repository, role.subject, trigger), this.options.putWaitMs, this.options.logger);
      if (outcome?.record.state === 'admitted') return { outcome: 'admitted', committed: true };
      const state = outcome?.record.state ?? 'pending';
      return { outcome: 'pending', waitingFor: [`its subject ${role.subject} to be admitted (now ${state})`] };
    }
    if (!subject && (await this.reevaluateElsewhere(request, role.subject))) {
      return { outcome: 'admitted', committed: false };
    }
    const where = subject ? `its subject ${role.subject} is ${subject.state}` : `its subject ${role.subject} has not been pushed yet`;
    return { outcome: 'pending', waitingFor: [`${where}; this evidence stays in quarantine until the subject is admitted`] };
  }

  /**
   * Evidence pushed to a signature repository (COSIGN_REPOSITORY) re-evaluates pending
   * subjects in the repositories whose policy looks there. True when one of them was admitted
   * (the evidence is then committed where it was pushed, so readers can verify it).
   */
  private async reevaluateElsewhere(request: AdmissionRequest, subject: string): Promise<boolean> {
    const pending = await this.options.admissions.list({ digest: subject, state: 'pending', limit: 50 });
    const interested = pending.filter((a) =>
      this.options.policyFor(a.repository).policy.rules.some((r) => r.signatureRepository === request.repository),
    );
    let admitted = false;
    for (const admission of interested) {
      const trigger: Trigger = { reason: 'evidence', evidence: request.digest, principal: request.principal, requestId: request.requestId };
      const outcome = await withDeadline(this.decide(admission.repository, subject, trigger), this.options.putWaitMs, this.options.logger);
      admitted ||= outcome?.record.state === 'admitted';
    }
    return admitted;
  }

  /**
   * Evaluates a subject and records the decision; commits it when admitted. A denial
   * under the same policy version is frozen; an admission is never taken back.
   */
  async decide(repository: string, digest: string, trigger: Trigger): Promise<Outcome> {
    const { admissions } = this.options;
    const loaded = this.options.policyFor(repository);
    // A manifest new in the repository has no verdict to freeze (an expired one is not frozen).
    const existing = trigger.pushed?.firstPush ? null : await admissions.get(repository, digest);
    const frozen =
      trigger.reason !== 're-evaluate' &&
      existing !== null &&
      (existing.state === 'admitted' || existing.state === 'denied') &&
      existing.policy?.hash === loaded.hash;
    if (frozen) return this.recordPushOnly(repository, digest, trigger);

    const tree = await this.reader.subjectTree(repository, digest, trigger.pushed);
    const items = await this.reader.evidenceFor(repository, digest);
    const evidence: Evidence = { repository, subject: tree.facts, items, extra: {} };
    await this.addVerifiedEvidence(loaded, evidence);
    const { done: waitOn } = await this.addScan(loaded, evidence);
    const decision = this.options.evaluate(loaded, evidence, this.now());
    let nodes: ManifestNode[] = [];
    let moves: Promise<void> | null = null;
    if (decision.outcome === 'admitted') {
      nodes = [...tree.nodes, ...(await this.reader.evidenceNodes(repository, digest, items))];
      // Evidence about the children of an index (their own signatures) is committed with them.
      for (const child of tree.nodes) if (child.digest !== digest) nodes.push(...(await this.reader.evidenceNodes(repository, child.digest)));
      // The files move while the transaction below does its first statements; it waits for
      // them before it ends, so the switch still comes after the bytes (see startMoves).
      moves = (await this.startMoves(nodes, trigger.pushed?.contentLocations)).done;
    }
    const children = tree.nodes.filter((n) => n.digest !== digest).map((n) => n.digest);
    const outcome = await this.options.registry.metadata.db.transaction(async (tx) => {
      const repoId = await this.lock(tx, repository, digest);
      const found = evidenceSummary(evidence);
      const subject = { repository, digest, mediaType: tree.facts.mediaType, tags: trigger.tags ?? [], pushedBy: trigger.principal ?? null };
      // A new admission is opened with this decision; an existing one is updated below if it changed.
      const { record: current, created } = await admissions.open(tx, repoId, subject, { decision, evidence: found });
      if (current.state === 'admitted' && decision.outcome !== 'admitted') {
        // Never un-admit: the new verdict is recorded, the content stays; new tags wait.
        await this.auditDecision(tx, repository, digest, decision, trigger, { admissionKept: 'admitted' });
        return { record: current, decision };
      }
      let record = current;
      const changed = !created && current.state !== 'admitted' && !sameDecision(current, decision);
      if (changed) {
        await admissions.record(tx, repoId, digest, decision, found);
        record = { ...withDecision(current, decision), evidence: found };
      }
      const commit = decision.outcome === 'admitted' ? await this.switchVisible(tx, repository, repoId, digest, nodes, children, trigger) : null;
      if (moves) {
        await moves;
        failpoint('commit:before-switch'); // the switch is written, not yet committed
      }
      // The records come last, in the order of what they record: an append holds the head of
      // the audit chain until this transaction ends (on PostgreSQL, every other append waits).
      if (created || changed) {
        await this.auditDecision(tx, repository, digest, decision, trigger, { ...scanDetail(evidence), ...(Object.keys(found).length > 0 ? { evidence: found } : {}) });
      }
      if (commit) await this.options.audit.append(tx, commit);
      return { record, decision };
    }).finally(() => moves?.catch(() => undefined)); // a transaction that failed first: the moves end before the push is answered
    this.changed(repository, digest);
    if (waitOn) this.afterScan(repository, digest, waitOn);
    return { ...outcome, waitOn: this.rescanDecisions.get(`${repository}@${digest}`) };
  }

  /**
   * Verifies signatures and attestations of the subject's evidence with the policy's keys
   * when a rule needs them; each check records why it does or does not count.
   */
  private async addVerifiedEvidence(loaded: LoadedPolicy, evidence: Evidence): Promise<void> {
    if (!loaded.policy.rules.some((r) => EVIDENCE_RULES.has(r.type))) return;
    const trust = { keys: loaded.keys ?? [], roots: loaded.trustedRoots ?? [] };
    // Signatures may also live in a separate repository (cosign's COSIGN_REPOSITORY).
    const elsewhere = [...new Set(loaded.policy.rules.map((r) => r.signatureRepository).filter((r): r is string => typeof r === 'string'))];
    evidence.extra.verified = await this.verifyFor(evidence.repository, evidence.subject.digest, evidence.items, elsewhere, trust);
    const children = imageDigests(evidence.subject).filter((d) => d !== evidence.subject.digest);
    if (children.length > 0) {
      const perChild: Record<string, VerifiedEvidence> = {};
      for (const child of children) {
        perChild[child] = await this.verifyFor(evidence.repository, child, await this.reader.evidenceFor(evidence.repository, child), elsewhere, trust);
      }
      evidence.extra.children = perChild;
    }
  }

  /** Verifies one digest's evidence (from its repository and any signature repositories). */
  private async verifyFor(repository: string, digest: string, items: EvidenceItem[], elsewhere: string[], trust: PolicyTrust): Promise<VerifiedEvidence> {
    const registry = this.options.registry;
    const subjectBytes = (await registry.getManifest(repository, digest)).body;
    const verified: VerifiedEvidence = { signatures: [], attestations: [] };
    const sources: Array<{ repository: string; item: EvidenceItem }> = items.map((item) => ({ repository, item }));
    for (const other of elsewhere) {
      for (const item of await this.reader.evidenceFor(other, digest)) sources.push({ repository: other, item });
    }
    for (const { repository: where, item } of sources) {
      if (item.kind === 'fallback-index') continue;
      try {
        const { manifest } = await this.reader.parsed(where, item.digest);
        const source = { digest: item.digest, manifest, read: (d: string) => registry.readContent(where, d, MAX_EVIDENCE_BLOB) };
        const found = await verifyEvidenceManifest(source, trust, subjectBytes);
        verified.signatures.push(...found.signatures);
        verified.attestations.push(...found.attestations);
      } catch (err) {
        verified.signatures.push({ source: item.digest, signer: null, digest: null, dockerReference: null, problem: `unreadable evidence: ${(err as Error).message}` });
      }
    }
    return verified;
  }

  /** Puts the scan (or its state) into the evidence when the policy has a rule that needs one. */
  private async addScan(loaded: LoadedPolicy, evidence: Evidence): Promise<{ done?: Promise<unknown> }> {
    if (!loaded.policy.rules.some((r) => r.type === 'vulnerabilities')) return {};
    const scans = this.options.scans;
    if (!scans) {
      evidence.extra.scan = { state: 'error', message: 'no vulnerability scanner is configured on this gateway' };
      return {};
    }
    const { scan, done } = await scans.evidence(evidence.repository, evidence.subject.digest, imageDigests(evidence.subject));
    evidence.extra.scan = scan;
    return { done };
  }

  /** When a running scan ends, the subject is evaluated again (once per scan). */
  private afterScan(repository: string, digest: string, done: Promise<unknown>): void {
    const key = `${repository}@${digest}`;
    if (this.rescanDecisions.has(key)) return;
    const next = done
      .then(() => this.decide(repository, digest, { reason: 'scan' }))
      .catch((err: unknown) => this.options.logger.error({ err, repository, digest }, 'evaluation after the scan failed'))
      .finally(() => this.rescanDecisions.delete(key));
    this.rescanDecisions.set(key, next);
  }

  /**
   * Rescans admitted subjects whose policy has a vulnerabilities rule. New findings and the
   * would-be verdict are audited and reported; the admission never changes (an admitted
   * image stays pullable unless an operator acts).
   */
  async rescan(filter: { repository?: string; digest?: string }, actor: { principal?: string | null; requestId?: string | null } = {}): Promise<RescanReport[]> {
    const reports: RescanReport[] = [];
    let before: number | undefined;
    for (;;) {
      const page = await this.options.admissions.list({ state: 'admitted', repository: filter.repository, digest: filter.digest, before, limit: 100 });
      for (const record of page) {
        if (record.admittedWith) continue; // scanned with the index that brought it
        const loaded = this.options.policyFor(record.repository);
        if (!loaded.policy.rules.some((r) => r.type === 'vulnerabilities')) continue;
        reports.push(await this.rescanOne(record.repository, record.digest, loaded, actor));
      }
      if (page.length < 100) return reports;
      before = page[page.length - 1].id;
    }
  }

  private async rescanOne(repository: string, digest: string, loaded: LoadedPolicy, actor: { principal?: string | null; requestId?: string | null }): Promise<RescanReport> {
    const tree = await this.reader.subjectTree(repository, digest);
    const scans = this.options.scans;
    const previous = scans ? await scans.latest(digest) : null;
    let scan: ScanEvidence;
    try {
      if (!scans) throw new Error('no vulnerability scanner is configured on this gateway');
      scan = { state: 'done', result: await scans.rescan(repository, digest, imageDigests(tree.facts)) };
    } catch (err) {
      scan = { state: 'error', message: (err as Error).message };
    }
    const evidence: Evidence = { repository, subject: tree.facts, items: await this.reader.evidenceFor(repository, digest), extra: { scan } };
    const decision = this.options.evaluate(loaded, evidence, this.now());
    const key = (f: { id: string; pkgName: string; installedVersion: string }) => `${f.id} ${f.pkgName} ${f.installedVersion}`;
    const known = new Set((previous?.findings ?? []).map(key));
    const newFindings = scan.state === 'done' ? scan.result.findings.filter((f) => !known.has(key(f))).map((f) => `${f.id} (${f.severity}) in ${f.pkgName} ${f.installedVersion}`) : [];
    const report: RescanReport = {
      repository,
      digest,
      wouldBe: decision.outcome,
      reasons: decision.reasons,
      newFindings,
      error: scan.state === 'error' ? scan.message : null,
      summary: scan.state === 'done' ? scan.result.summary : null,
    };
    await this.options.registry.metadata.db.transaction((tx) =>
      this.options.audit.append(tx, {
        action: 'rescan',
        repository,
        digest,
        principal: actor.principal ?? null,
        requestId: actor.requestId ?? null,
        detail: { ...report, policy: decision.policy, dbVersion: scan.state === 'done' ? scan.result.dbVersion : null },
      }),
    );
    if (report.wouldBe !== 'admitted' || newFindings.length > 0) {
      this.options.logger.warn({ repository, digest, wouldBe: report.wouldBe, newFindings: newFindings.length }, 'rescan found new problems in an admitted image');
    }
    return report;
  }

  /** Admits again with the current policy (administrators); an admitted subject stays admitted. */
  async reevaluate(repository: string, digest: string, actor: { principal?: string | null; requestId?: string | null }): Promise<Outcome> {
    if (!(await this.options.admissions.get(repository, digest))) throw new GateError(`no admission for ${digest} in ${repository}`);
    this.options.scans?.forget(digest);
    return this.decide(repository, digest, { reason: 're-evaluate', ...actor });
  }

  /** A push of content whose verdict is frozen: add the tags; if admitted, make them visible. */
  private async recordPushOnly(repository: string, digest: string, trigger: Trigger): Promise<Outcome> {
    const { admissions } = this.options;
    const outcome = await this.options.registry.metadata.db.transaction(async (tx) => {
      const repoId = await this.lock(tx, repository, digest);
      const { record } = await admissions.open(tx, repoId, { repository, digest, mediaType: '', tags: trigger.tags ?? [], pushedBy: null });
      const commit = record.state === 'admitted' ? await this.switchVisible(tx, repository, repoId, digest, [{ digest, contentDigests: [] }], [], trigger) : null;
      if (commit) await this.options.audit.append(tx, commit);
      return { record, decision: null };
    });
    this.changed(repository, digest);
    return outcome;
  }

  private async commitEvidence(repository: string, subject: string, evidence: string, actor: { principal?: string | null; requestId?: string | null }): Promise<void> {
    const { manifest } = await this.reader.parsed(repository, evidence);
    const nodes: ManifestNode[] = [
      { digest: evidence, contentDigests: contentDigestsOf(manifest) },
      ...(await this.reader.evidenceNodes(repository, evidence)),
    ];
    await (await this.startMoves(nodes)).done;
    await this.options.registry.metadata.db.transaction(async (tx) => {
      await this.lock(tx, repository, subject);
      const visible = await this.options.registry.metadata.commitManifests(tx, repository, nodes);
      await this.options.audit.append(tx, {
        action: 'commit',
        repository,
        digest: evidence,
        principal: actor.principal ?? null,
        requestId: actor.requestId ?? null,
        detail: { evidenceFor: subject, manifests: nodes.map((n) => n.digest), tags: visible },
      });
    });
    this.changed(repository, subject);
  }

  /**
   * Commit steps 1 and 2: blobs, then the manifests that need them, into the committed area.
   * Reads where the content is, then starts the moves and returns them running as `done`
   * (already observed, so that a failure before the caller awaits it is not unhandled). The caller
   * must await them before its switch's transaction commits (invariant 2: a crash before
   * that leaves moved files no row names committed, which is garbage, never a visible image
   * without its bytes). They touch only files: a transaction on the embedded database's one
   * connection may wait for them without waiting for itself.
   */
  private async startMoves(nodes: ManifestNode[], known?: ReadonlyMap<string, ContentLocation>): Promise<{ done: Promise<void> }> {
    const { registry } = this.options;
    const manifests = new Set(nodes.map((n) => n.digest));
    const order = commitOrder(nodes);
    // Locations read once for both steps (or as the push read them). Manifests kept in the
    // database have no bytes to move; step 2 moves those stored before they were kept there.
    const locations = await registry.contentLocations(order, known);
    const moves = (async () => {
      await registry.commitContent(order.filter((d) => !manifests.has(d)), locations);
      failpoint('commit:after-blobs');
      await registry.commitContent(order.filter((d) => manifests.has(d)), locations);
      failpoint('commit:after-manifests');
    })();
    moves.catch(() => undefined);
    return { done: moves };
  }

  /**
   * Step 3, the visible switch: content, manifests and tags, and children's admissions. Returns
   * the commit record for the caller to append once its other statements are done (null when
   * nothing changed).
   */
  private async switchVisible(
    tx: Queryable,
    repository: string,
    repoId: number,
    digest: string,
    nodes: ManifestNode[],
    children: string[],
    trigger: Trigger,
  ): Promise<AuditEvent | null> {
    const visible = await this.options.registry.metadata.commitManifests(tx, repository, nodes);
    const childrenAdmitted = await this.options.admissions.admitWith(tx, repoId, children, digest);
    if (nodes.length === 1 && visible.length === 0 && nodes[0].contentDigests.length === 0) return null; // nothing changed
    return commitRecord(repository, digest, trigger, nodes.map((n) => n.digest), visible, childrenAdmitted);
  }

  private async auditDecision(tx: Queryable, repository: string, digest: string, decision: Decision, trigger: Trigger, extra: Record<string, unknown> = {}) {
    await this.options.audit.append(tx, {
      action: 'admission.decision',
      repository,
      digest,
      principal: trigger.principal ?? null,
      requestId: trigger.requestId ?? null,
      detail: {
        outcome: decision.outcome,
        policy: decision.policy,
        results: decision.results,
        reasons: decision.reasons,
        waitingFor: decision.waitingFor,
        warnings: decision.warnings,
        trigger: trigger.reason,
        ...(trigger.evidence ? { evidence: trigger.evidence } : {}),
        ...extra,
      },
    });
  }

  private async lock(tx: Queryable, repository: string, digest: string): Promise<number> {
    await this.options.admissions.lockSubject(tx, repository, digest);
    return this.options.registry.metadata.ensureRepository(repository, tx);
  }

  /**
   * Closes admissions pending or denied for longer than their expiry: the admission becomes
   * `expired` and the staged manifest leaves the repository (its bytes become garbage).
   */
  async expire(pendingBefore: Date, deniedBefore: Date): Promise<number> {
    let count = 0;
    for (const [state, before] of [['pending', pendingBefore], ['denied', deniedBefore]] as const) {
      for (const { repository, digest } of await this.options.admissions.stale(state, before)) {
        const expired = await this.options.registry.metadata.db.transaction(async (tx) => {
          const repoId = await this.lock(tx, repository, digest);
          const current = await this.options.admissions.get(repository, digest, tx);
          if (!current || current.state !== state || current.updatedAt >= before) return false;
          await this.options.admissions.setState(tx, repoId, digest, 'expired');
          this.options.registry.metadata.invalidate();
          await tx.query(`DELETE FROM manifests WHERE repository_id = $1 AND digest = $2 AND state = 'staged'`, [repoId, digest]);
          await this.options.audit.append(tx, {
            action: 'expiry',
            repository,
            digest,
            detail: { was: state, since: current.updatedAt.toISOString(), tags: current.tags },
          });
          return true;
        });
        if (expired) {
          count++;
          this.changed(repository, digest);
        }
      }
    }
    if (count > 0) this.options.logger.info({ expired: count }, 'expired quarantined admissions');
    return count;
  }

  /**
   * Waits until the admission leaves `pending` or the time is up. Wakes on local changes
   * and polls the database once a second (another replica may decide).
   */
  async waitFor(repository: string, digest: string, timeoutMs: number): Promise<AdmissionRecord | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const record = await this.options.admissions.get(repository, digest);
      if (!record || record.state !== 'pending' || Date.now() >= deadline) return record;
      await this.nextChange(repository, digest, Math.min(1000, deadline - Date.now()));
    }
  }

  private nextChange(repository: string, digest: string, ms: number): Promise<void> {
    const key = `${repository}@${digest}`;
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.changes.off(key, done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.changes.on(key, done);
    });
  }

  private changed(repository: string, digest: string): void {
    this.changes.emit(`${repository}@${digest}`);
  }
}

/** The audit record of a commit: the manifests made visible, the tags that now name them, the children admitted with them. */
function commitRecord(repository: string, digest: string, trigger: Trigger, manifests: string[], tags: Array<{ tag: string; digest: string }>, childrenAdmitted: string[]): AuditEvent {
  return {
    action: 'commit',
    repository,
    digest,
    principal: trigger.principal ?? null,
    requestId: trigger.requestId ?? null,
    detail: { manifests, tags, childrenAdmitted },
  };
}

/** Blobs before the manifests that need them, each digest once. */
function commitOrder(nodes: ManifestNode[]): string[] {
  const order: string[] = [];
  const seen = new Set<string>();
  const add = (d: string) => {
    if (!seen.has(d)) {
      seen.add(d);
      order.push(d);
    }
  };
  for (const node of nodes) node.contentDigests.forEach(add);
  for (const node of nodes) add(node.digest);
  return order;
}

/** The admission as `record()` leaves it, without reading it back. */
function withDecision(current: AdmissionRecord, decision: Decision): AdmissionRecord {
  const now = new Date();
  return {
    ...current,
    state: decision.outcome,
    policy: decision.policy,
    results: decision.results,
    reasons: decision.reasons,
    waitingFor: decision.waitingFor,
    warnings: decision.warnings,
    evaluations: current.evaluations + 1,
    updatedAt: now,
    decidedAt: decision.outcome === 'pending' ? current.decidedAt : now,
  };
}

/** What verified evidence said, kept with the admission: signers, attestations, SBOM packages. */
function evidenceSummary(evidence: Evidence): Record<string, unknown> {
  const verified = evidence.extra.verified as VerifiedEvidence | undefined;
  if (!verified) return {};
  const signerOf = (s: { signer: { keyRef?: string; identity?: { subject: string; issuer: string } } | null }) =>
    s.signer ? (s.signer.keyRef ?? `${s.signer.identity?.subject} (${s.signer.identity?.issuer})`) : null;
  return {
    signatures: verified.signatures.map((s) => ({ source: s.source, signer: signerOf(s), digest: s.digest, problem: s.problem })),
    attestations: verified.attestations.map((a) => ({ source: a.source, signer: signerOf(a), predicateType: a.predicateType, subjects: a.subjects, problem: a.problem })),
    packages: verified.attestations.filter((a) => a.problem === null && a.subjects.includes(evidence.subject.digest)).flatMap((a) => a.packages ?? []),
  };
}

/** The scan summary that goes with a decision into the audit trail. */
function scanDetail(evidence: Evidence): Record<string, unknown> {
  const scan = evidence.extra.scan as ScanEvidence | undefined;
  if (!scan) return {};
  if (scan.state === 'done') {
    const { findings, ...rest } = scan.result;
    return { scan: { ...rest, findings: findings.map((f) => ({ id: f.id, pkg: f.pkgName, version: f.installedVersion, severity: f.severity, fixed: f.fixedVersion })) } };
  }
  return { scan };
}

function sameDecision(current: AdmissionRecord, decision: Decision): boolean {
  return (
    current.state === decision.outcome &&
    current.policy?.hash === decision.policy.hash &&
    canonicalJson(current.results) === canonicalJson(decision.results)
  );
}

/** What the manifest PUT answers for a subject. */
function answer(outcome: Outcome, untaggedPush: boolean): AdmissionDecision {
  const { record } = outcome;
  const decision = outcome.decision;
  if (record.state === 'admitted' && (!decision || decision.outcome === 'admitted')) {
    return { outcome: 'admitted', committed: true, warnings: decision?.warnings ?? record.warnings };
  }
  const state = decision?.outcome ?? record.state;
  const reasons = decision?.reasons ?? record.reasons;
  if (state === 'denied') return { outcome: 'denied', reasons, quarantined: untaggedPush };
  if (state === 'expired') return { outcome: 'pending', waitingFor: ['re-evaluation: this content had expired'] };
  return { outcome: 'pending', waitingFor: decision?.waitingFor ?? record.waitingFor };
}

/** The promise's value, or null when it takes longer than `ms` (the work goes on). */
async function withDeadline<T>(work: Promise<T>, ms: number, logger: Logger): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  let late = false;
  const deadline = new Promise<null>((resolve) => {
    timer = setTimeout(() => {
      late = true;
      resolve(null);
    }, ms);
  });
  work.catch((err: unknown) => {
    if (late) logger.error({ err }, 'admission evaluation failed after the push was answered; the admission stays pending');
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
