/**
 * Who may do what: principals, repository globs and actions. Pure decisions from the
 * configuration (and a robot's own scopes); no I/O.
 */
import picomatch from 'picomatch';
import type { AccessRule, Action, AuthConfig } from '../config/config.js';

export type { Action };

export interface RobotScope {
  repositories: string[];
  actions: Action[];
}

export interface Principal {
  kind: 'user' | 'robot' | 'anonymous';
  name: string;
  /** A robot's own scope, stored with the robot. */
  robotScope?: RobotScope;
}

export const ANONYMOUS: Principal = { kind: 'anonymous', name: '' };

const ALL_ACTIONS: Action[] = ['pull', 'push', 'delete', 'admin'];

interface CompiledRule {
  subjects: Set<string>;
  matches: (repository: string) => boolean;
  actions: Action[];
}

/** Repository glob matching shared by access rules and policies: `*` one segment, `**` any depth. */
export function compileGlobs(globs: string[]): (repository: string) => boolean {
  const matchers = globs.map((g) => picomatch(g, { dot: true }));
  return (repository) => matchers.some((m) => m(repository));
}

/** Adds what each action implies: admin → everything; push → pull (pushers read back what they push). */
export function expandActions(actions: Iterable<Action>): Set<Action> {
  const out = new Set<Action>();
  for (const action of actions) {
    if (action === 'admin') ALL_ACTIONS.forEach((a) => out.add(a));
    else out.add(action);
    if (action === 'push') out.add('pull');
  }
  return out;
}

export class AccessControl {
  private readonly rules: CompiledRule[];
  private readonly anonymousPull: (repository: string) => boolean;
  private readonly groupsOf = new Map<string, string[]>();
  private readonly admins: Set<string>;

  constructor(config: Pick<AuthConfig, 'rules' | 'groups' | 'anonymousPull' | 'admins'>) {
    this.rules = config.rules.map((rule: AccessRule) => ({
      subjects: new Set(rule.subjects),
      matches: compileGlobs(rule.repositories),
      actions: rule.actions,
    }));
    this.anonymousPull = compileGlobs(config.anonymousPull);
    for (const [group, members] of Object.entries(config.groups)) {
      for (const member of members) this.groupsOf.set(member, [...(this.groupsOf.get(member) ?? []), group]);
    }
    this.admins = new Set(config.admins);
  }

  /** The subject strings a principal answers to in rules. */
  subjectsOf(principal: Principal): string[] {
    if (principal.kind === 'anonymous') return ['anonymous'];
    const own = `${principal.kind}:${principal.name}`;
    const groups = principal.kind === 'user' ? (this.groupsOf.get(principal.name) ?? []).map((g) => `group:${g}`) : [];
    return [own, ...groups, 'authenticated'];
  }

  isAdmin(principal: Principal): boolean {
    return this.subjectsOf(principal).some((s) => this.admins.has(s));
  }

  /** Every action the principal may take on the repository. */
  actions(principal: Principal, repository: string): Set<Action> {
    if (principal.kind === 'anonymous') {
      const granted = new Set<Action>();
      if (this.anonymousPull(repository)) granted.add('pull');
      // Rules may name `anonymous`, but anonymous access is pull-only at most.
      for (const rule of this.rules) {
        if (rule.subjects.has('anonymous') && rule.matches(repository) && rule.actions.length > 0) granted.add('pull');
      }
      return granted;
    }
    if (this.isAdmin(principal)) return new Set(ALL_ACTIONS);
    const subjects = this.subjectsOf(principal);
    const granted: Action[] = [];
    for (const rule of this.rules) {
      if (rule.matches(repository) && subjects.some((s) => rule.subjects.has(s))) granted.push(...rule.actions);
    }
    const scope = principal.robotScope;
    if (scope && compileGlobs(scope.repositories)(repository)) granted.push(...scope.actions);
    if (this.anonymousPull(repository)) granted.push('pull');
    return expandActions(granted);
  }
}
