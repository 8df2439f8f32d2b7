/**
 * Policy validation: the shipped JSON schema (policies/policy.schema.json) for the document,
 * then each rule against its rule type's own schema. Every problem is reported with its
 * JSON pointer, not just the first.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import type { Policy } from './types.js';
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

const ajv = new Ajv({ allErrors: true, strict: false });
let documentValidator: ValidateFunction | null = null;
const ruleValidators = new Map<string, ValidateFunction>();

function validateDocument(doc: unknown): ErrorObject[] {
  documentValidator ??= ajv.compile(JSON.parse(readFileSync(schemaPath(), 'utf8')) as object);
  return documentValidator(doc) ? [] : [...(documentValidator.errors ?? [])];
}

function ruleValidator(type: string): ValidateFunction | null {
  const known = ruleType(type);
  if (!known) return null;
  let validator = ruleValidators.get(type);
  if (!validator) {
    validator = ajv.compile(known.schema);
    ruleValidators.set(type, validator);
  }
  return validator;
}

function toProblem(error: ErrorObject, prefix = ''): Problem {
  const pointer = prefix + error.instancePath || '/';
  if (error.keyword === 'additionalProperties') {
    return { pointer, message: `unknown property ${JSON.stringify((error.params as { additionalProperty: string }).additionalProperty)}` };
  }
  if (error.keyword === 'enum') {
    return { pointer, message: `must be one of ${(error.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}` };
  }
  if (error.keyword === 'anyOf' && prefix) return { pointer, message: 'needs at least one requirement option' };
  return { pointer, message: error.message ?? 'is invalid' };
}

/** Every problem in a policy document; an empty list means it is valid. */
export function policyProblems(doc: unknown): Problem[] {
  const problems = validateDocument(doc)
    .filter((e) => !(e.keyword === 'if'))
    .map((e) => toProblem(e));
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
    if (!validator(rule)) for (const e of validator.errors ?? []) problems.push(toProblem(e, `/rules/${i}`));
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
