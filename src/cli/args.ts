/**
 * Parsers for command-line option values: a bad value stops the command with commander's own
 * one-line "error: option '--from <seq>' argument 'abc' is invalid. …" and exit code 1.
 */
import { InvalidArgumentError } from 'commander';
import type { Action } from '../config/config.js';

export function wholeNumber(value: string): number {
  if (!/^\d{1,15}$/.test(value)) throw new InvalidArgumentError('It must be a whole number.');
  return Number(value);
}

/** Days of validity: 1 to 3650, as the administration API accepts. */
export function days(value: string): number {
  const n = /^\d{1,4}$/.test(value) ? Number(value) : 0;
  if (n < 1 || n > 3650) throw new InvalidArgumentError('It must be a whole number of days from 1 to 3650.');
  return n;
}

export function isoTime(value: string): Date {
  const time = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(time.getTime())) throw new InvalidArgumentError('It must be an ISO 8601 time, like 2026-01-31 or 2026-01-31T12:00:00Z.');
  return time;
}

export function actions(value: string): Action[] {
  const list = value.split(',').map((a) => a.trim());
  const unknown = list.filter((a) => !['pull', 'push', 'delete'].includes(a));
  if (unknown.length > 0) throw new InvalidArgumentError(`Unknown action ${unknown.join(', ')}: use pull, push, delete.`);
  return list as Action[];
}
