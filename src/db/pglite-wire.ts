/**
 * Reads the backend messages a PGlite call returns (PostgreSQL's wire protocol v3), keeping
 * only what the database layer uses: row and parameter descriptions, data rows, and errors.
 * PGlite's own execProtocol() copies every chunk PostgreSQL writes and builds an object for
 * every message with a general parser, on the one thread that serves requests; this reads
 * the whole reply once.
 */
import { DatabaseError } from 'pg-protocol';

export interface Field {
  name: string;
  type: number;
}

/** One reply: the last result's fields and rows (text values), parameter types, any error. */
export interface Reply {
  /** Fields of the last RowDescription, or null when the reply had none. */
  fields: Field[] | null;
  /** Data rows after the last RowDescription (all of them when there was none). */
  rows: Array<Array<string | null>>;
  /** Types of a ParameterDescription, or null when the reply had none. */
  paramTypes: number[] | null;
  error: DatabaseError | null;
}

const ROW_DESCRIPTION = 0x54; // 'T'
const DATA_ROW = 0x44; // 'D'
const PARAMETER_DESCRIPTION = 0x74; // 't'
const ERROR_RESPONSE = 0x45; // 'E'

/** Chunks as PGlite hands them over (views of its memory, reused afterwards: copied here). */
export class ReplyCollector {
  private readonly chunks: Buffer[] = [];

  readonly onRawData = (data: Uint8Array): void => {
    this.chunks.push(Buffer.from(data));
  };

  reply(): Reply {
    return readReply(this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks));
  }
}

export function readReply(buf: Buffer): Reply {
  const reply: Reply = { fields: null, rows: [], paramTypes: null, error: null };
  let at = 0;
  while (at + 5 <= buf.length) {
    const code = buf[at] as number;
    const end = at + 1 + buf.readInt32BE(at + 1);
    if (end > buf.length) throw new Error(`PGlite returned a truncated message ('${String.fromCharCode(code)}')`);
    const body = at + 5;
    if (code === DATA_ROW) reply.rows.push(readDataRow(buf, body));
    else if (code === ROW_DESCRIPTION) {
      reply.fields = readRowDescription(buf, body);
      reply.rows = [];
    } else if (code === PARAMETER_DESCRIPTION) reply.paramTypes = readParameterDescription(buf, body);
    else if (code === ERROR_RESPONSE) reply.error ??= readError(buf, body, end);
    at = end;
  }
  return reply;
}

function readDataRow(buf: Buffer, at: number): Array<string | null> {
  const count = buf.readInt16BE(at);
  const values = new Array<string | null>(count);
  let pos = at + 2;
  for (let i = 0; i < count; i++) {
    const length = buf.readInt32BE(pos);
    pos += 4;
    if (length < 0) values[i] = null;
    else {
      values[i] = buf.toString('utf8', pos, pos + length);
      pos += length;
    }
  }
  return values;
}

function readRowDescription(buf: Buffer, at: number): Field[] {
  const count = buf.readInt16BE(at);
  const fields: Field[] = [];
  let pos = at + 2;
  for (let i = 0; i < count; i++) {
    const nul = buf.indexOf(0, pos);
    const name = buf.toString('utf8', pos, nul);
    // table oid (4), column number (2), type oid (4), type size (2), type modifier (4), format (2)
    const type = buf.readInt32BE(nul + 1 + 6);
    fields.push({ name, type });
    pos = nul + 1 + 18;
  }
  return fields;
}

function readParameterDescription(buf: Buffer, at: number): number[] {
  const count = buf.readInt16BE(at);
  const types: number[] = [];
  for (let i = 0; i < count; i++) types.push(buf.readInt32BE(at + 2 + 4 * i));
  return types;
}

/** An ErrorResponse as pg's DatabaseError, with the fields it names (code, detail, constraint, ...). */
function readError(buf: Buffer, at: number, end: number): DatabaseError {
  const parts = new Map<string, string>();
  let pos = at;
  while (pos < end && buf[pos] !== 0) {
    const key = String.fromCharCode(buf[pos] as number);
    const nul = buf.indexOf(0, pos + 1);
    parts.set(key, buf.toString('utf8', pos + 1, nul));
    pos = nul + 1;
  }
  const error = new DatabaseError(parts.get('M') ?? 'unknown database error', end - at + 4, 'error');
  error.severity = parts.get('S');
  error.code = parts.get('C');
  error.detail = parts.get('D');
  error.hint = parts.get('H');
  error.position = parts.get('P');
  error.internalPosition = parts.get('p');
  error.internalQuery = parts.get('q');
  error.where = parts.get('W');
  error.schema = parts.get('s');
  error.table = parts.get('t');
  error.column = parts.get('c');
  error.dataType = parts.get('d');
  error.constraint = parts.get('n');
  error.file = parts.get('F');
  error.line = parts.get('L');
  error.routine = parts.get('R');
  return error;
}
