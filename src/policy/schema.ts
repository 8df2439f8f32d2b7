/**
 * Policy validation: the shipped JSON schema (policies/policy.schema.json) for the document,
 * then each rule against its rule type's own schema. Every problem is reported with its
 * JSON pointer, not just the first.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import type { Policy, RuleType } from './types.js';
import { ruleType, ruleTypeNames } from './registry.js';

export interface Problem {
  pointer: string;
  message: string;
}

/** The schema ships beside the default policy; found from the source tree and from dist/. */
export function schemaPath(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const up of ['../..', '../../..']) {
    const candidate = path.resolve(here, up, 'policies', 'policy.schema.json');
    try {
      readFileSync(candidate);
      return candidate;
    } catch {
      // try the next
    }
  }
  throw new Error('policies/policy.schema.json is missing from this installation');
}

// verbose: an anyOf/oneOf error carries its branches, so that "one of these options" can be named.
const ajv = new Ajv({ allErrors: true, strict: false, verbose: true });
let documentValidator: ValidateFunction | null = null;
/** Keyed by the registered object, so a type registered again with another schema is recompiled. */
const ruleValidators = new WeakMap<RuleType, ValidateFunction>();

function validateDocument(doc: unknown): ErrorObject[] {
  documentValidator ??= ajv.compile(JSON.parse(readFileSync(schemaPath(), 'utf8')) as object);
  return documentValidator(doc) ? [] : [...(documentValidator.errors ?? [])];
}

/** The validator of a rule type policy files may use; built-in types (the default deny) are not among them. */
function ruleValidator(type: string): ValidateFunction | null {
  const known = ruleType(type);
  if (!known || !ruleTypeNames().includes(type)) return null;
  let validator = ruleValidators.get(known);
  if (!validator) {
    validator = ajv.compile(known.schema);
    ruleValidators.set(known, validator);
  }
  return validator;
}

/** The property names of an anyOf/oneOf whose every branch is `{ required: [...] }`, else null. */
function requiredChoices(error: ErrorObject): string[] | null {
  const branches = error.schema;
  if (!Array.isArray(branches)) return null;
  const names: string[] = [];
  for (const branch of branches as unknown[]) {
    const required = (branch as { required?: unknown } | null)?.required;
    if (!Array.isArray(required) || Object.keys(branch as object).length !== 1) return null;
    names.push(required.join(' and '));
  }
  return names;
}

function choiceMessage(error: ErrorObject, choices: string[]): string {
  const list = choices.join(', ');
  if (error.keyword === 'anyOf') return `needs at least one of ${list}`;
  const passing = (error.params as { passingSchemas?: unknown }).passingSchemas;
  return Array.isArray(passing) ? `needs only one of ${list}, not several` : `needs one of ${list}`;
}

/**
 * An anyOf/oneOf of required options fails with one error per missing option plus its own;
 * keep one message that names the choice instead.
 */
function collapseChoices(errors: ErrorObject[]): Array<{ error: ErrorObject; message?: string }> {
  const choices = errors
    .filter((e) => e.keyword === 'anyOf' || e.keyword === 'oneOf')
    .map((e) => ({ error: e, names: requiredChoices(e) }))
    .filter((c): c is { error: ErrorObject; names: string[] } => c.names !== null);
  const inside = (e: ErrorObject) => choices.some((c) => e !== c.error && e.instancePath === c.error.instancePath && e.schemaPath.startsWith(`${c.error.schemaPath}/`));
  return errors
    .filter((e) => !inside(e))
    .map((e) => {
      const choice = choices.find((c) => c.error === e);
      return { error: e, message: choice ? choiceMessage(e, choice.names) : undefined };
    });
}

function toProblem(error: ErrorObject, prefix = '', message?: string): Problem {
  const pointer = prefix + error.instancePath || '/';
  if (message) return { pointer, message };
  if (error.keyword === 'additionalProperties') {
    return { pointer, message: `unknown property ${JSON.stringify((error.params as { additionalProperty: string }).additionalProperty)}` };
  }
  if (error.keyword === 'enum') {
    return { pointer, message: `must be one of ${(error.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}` };
  }
  // A pattern alone says little to a person; the schema's description of the value says what is wanted.
  const description = (error.parentSchema as { description?: unknown } | undefined)?.description;
  if (error.keyword === 'pattern' && typeof description === 'string') return { pointer, message: `${error.message}: ${description}` };
  return { pointer, message: error.message ?? 'is invalid' };
}

function toProblems(errors: ErrorObject[], prefix = ''): Problem[] {
  return collapseChoices(errors).map(({ error, message }) => toProblem(error, prefix, message));
}

/** Every problem in a policy document; an empty list means it is valid. */
export function policyProblems(doc: unknown): Problem[] {
  const problems = toProblems(validateDocument(doc).filter((e) => e.keyword !== 'if'));
  const rules = (doc as { rules?: unknown })?.rules;
  if (!Array.isArray(rules)) return dedupe(problems);
  const seen = new Map<string, number>();
  rules.forEach((rule: unknown, i: number) => {
    if (typeof rule !== 'object' || rule === null) return;
    const { id, type } = rule as { id?: unknown; type?: unknown };
    if (typeof id === 'string') {
      const first = seen.get(id);
      if (first !== undefined) problems.push({ pointer: `/rules/${i}/id`, message: `duplicate rule id ${JSON.stringify(id)} (also /rules/${first}/id)` });
      else seen.set(id, i);
    }
    if (typeof type !== 'string') return;
    const validator = ruleValidator(type);
    if (!validator) {
      problems.push({
        pointer: `/rules/${i}/type`,
        message: `rule type ${JSON.stringify(type)} is not available in this gateway yet (known: ${ruleTypeNames().join(', ')})`,
      });
      return;
    }
    if (!validator(rule)) problems.push(...toProblems(validator.errors ?? [], `/rules/${i}`));
  });
  return dedupe(problems);
}

function dedupe(problems: Problem[]): Problem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const key = `${p.pointer} ${p.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

export function isPolicy(doc: unknown): doc is Policy {
  return policyProblems(doc).length === 0;
}
