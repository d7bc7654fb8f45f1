import crypto from 'node:crypto';
import { AdminError, ErrorCodes } from '../../../shared/errors.js';
import { KEY_BYTES, SALT_BYTES, checkKey } from './envelope-format.js';
import { open, seal, sealedLength } from './seal.js';
import { SealError } from './seal-error.js';

/** The password-hashing parameters a key file was made with; a reader uses these, not its defaults. */
export interface KdfParams {
  name: 'scrypt';
  N: number;
  r: number;
  p: number;
  /** base64 of 32 random bytes */
  salt: string;
}

/**
 * `keys/<key id>`: the master key wrapped by one password. Plaintext JSON (it must be read before
 * anything can be opened). Only `kdf` and the key id are bound to the wrapped key (they are in its
 * envelope's label); createdAt, hostname and username are informational and unauthenticated.
 */
export interface KeyFile {
  version: 1;
  createdAt: string;
  hostname: string;
  username: string;
  kdf: KdfParams;
  /** base64 of the master key sealed under the password's key (KEK) */
  key: string;
}

/** Who made a key file, recorded in it for `key list` (unauthenticated: shown, never trusted). */
export interface KeyOrigin {
  hostname: string;
  username: string;
}

export interface KdfCost {
  N: number;
  r: number;
  p: number;
}

/**
 * The cost new key files get: 64 MiB of memory and about 0.4 s of CPU to unlock on the project's
 * 2-core test machine (bench/crypto-bench.ts measures it); N = 2^17 takes about 0.75 s there. N must
 * be a power of two, and 2^16 is the nearest to the half second aimed at.
 */
export const DEFAULT_KDF_COST: Readonly<KdfCost> = Object.freeze({ N: 2 ** 16, r: 8, p: 1 });

/** What a reader accepts, so that a hostile key file cannot make it allocate or spin without bound. */
export const KDF_BOUNDS = Object.freeze({ minLogN: 10, maxLogN: 20, maxR: 32, maxP: 16, maxMemory: 2 ** 30 });

/** The largest key file a reader takes (one is under 1 KiB): a larger object in `keys/` is not read where its listing says so. */
export const KEY_FILE_MAX_BYTES = 64 * 1024;
const KEY_ID = /^[a-z0-9._-]{1,128}$/;
const CREATED_AT = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z$/;
const MAX_TEXT = 255;
/** A key file names a 32-byte master key sealed in one chunk: its envelope length is fixed. */
const KEY_ENVELOPE_BYTES = sealedLength(KEY_BYTES);

/**
 * Wraps the master key with a password: KEK = scrypt(password, salt, 32) with a fresh 32-byte salt,
 * and the master key sealed under the KEK with the label keyLabel(keyId, kdf). The caller stores the
 * result (serializeKeyFile) as `keys/<keyId>`.
 */
export async function wrapMasterKey(master: Buffer, password: Buffer, keyId: string, cost: KdfCost = DEFAULT_KDF_COST, origin: KeyOrigin = { hostname: '', username: '' }): Promise<KeyFile> {
  checkKey(master, 'a master key');
  checkPassword(password);
  if (!isKeyId(keyId)) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `key id ${JSON.stringify(String(keyId)).slice(0, 80)} is not 1..128 of [a-z0-9._-]`);
  const bad = costProblem(cost.N, cost.r, cost.p);
  if (bad) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `scrypt cost refused: ${bad}`);
  if (!isText(origin.hostname) || !isText(origin.username)) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'hostname and username must be printable text of at most 255 characters');
  const kdf: KdfParams = { name: 'scrypt', N: cost.N, r: cost.r, p: cost.p, salt: crypto.randomBytes(SALT_BYTES).toString('base64') };
  const kek = await scryptKek(password, kdf);
  try {
    const envelope = seal(kek, keyLabel(keyId, kdf), [master]);
    return { version: 1, createdAt: new Date().toISOString(), hostname: origin.hostname, username: origin.username, kdf, key: envelope.toString('base64') };
  } finally {
    kek.fill(0);
  }
}

/**
 * The master key wrapped in `file` (a KeyFile, its parsed JSON, or its bytes), or null when `password`
 * does not open it: a wrong password and a damaged or forged envelope look the same, by design.
 * Throws SealError 'format' for a malformed file, a malformed key id, or scrypt parameters out of
 * bounds, and does so before any scrypt runs.
 */
export async function unwrapMasterKey(file: unknown, password: Buffer, keyId: string): Promise<Buffer | null> {
  const kf = file instanceof Uint8Array ? parseKeyFile(Buffer.from(file.buffer, file.byteOffset, file.byteLength)) : validateKeyFile(file);
  if (!isKeyId(keyId)) throw new SealError('format', `malformed key id ${JSON.stringify(String(keyId)).slice(0, 80)}`);
  checkPassword(password);
  const kek = await scryptKek(password, kf.kdf);
  let master: Buffer;
  try {
    master = open(kek, keyLabel(keyId, kf.kdf), Buffer.from(kf.key, 'base64'));
  } catch (err) {
    if (err instanceof SealError && err.kind === 'auth') return null;
    throw err;
  } finally {
    kek.fill(0);
  }
  if (master.length !== KEY_BYTES) throw new SealError('format', `key file keys/${keyId} wraps ${master.length} bytes, not a ${KEY_BYTES}-byte master key`);
  return master;
}

/** Parses and validates the bytes of a key file (SealError 'format' if they are not one). */
export function parseKeyFile(bytes: Buffer): KeyFile {
  if (bytes.length > KEY_FILE_MAX_BYTES) throw new SealError('format', `key file is ${bytes.length} bytes, more than a key file holds`);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new SealError('format', 'key file is not UTF-8 JSON');
  }
  return validateKeyFile(value);
}

/** A key file's bytes: canonical JSON (keys sorted, no whitespace), as stored in `keys/<key id>`. */
export function serializeKeyFile(file: KeyFile): Buffer {
  return Buffer.from(canonicalJson(validateKeyFile(file)), 'utf8');
}

/**
 * The label the wrapped master key is sealed under: binds the key file's name and its scrypt
 * parameters, so neither can be changed or moved to another key id without the envelope failing.
 */
export function keyLabel(keyId: string, kdf: KdfParams): string {
  return `node-admin v3 key keys/${keyId} ${canonicalJson({ N: kdf.N, name: kdf.name, p: kdf.p, r: kdf.r, salt: kdf.salt })}`;
}

export function isKeyId(keyId: unknown): keyId is string {
  return typeof keyId === 'string' && KEY_ID.test(keyId);
}

/** Checks every field's type and bound; returns a fresh object holding exactly the known fields. */
export function validateKeyFile(value: unknown): KeyFile {
  if (!isPlainObject(value)) throw formatError('is not a JSON object');
  onlyKeys(value, ['version', 'createdAt', 'hostname', 'username', 'kdf', 'key'], 'key file');
  if (value['version'] !== 1) throw formatError(`has version ${JSON.stringify(value['version'])?.slice(0, 20)}, not 1`);
  const createdAt = value['createdAt'];
  if (typeof createdAt !== 'string' || !CREATED_AT.test(createdAt)) throw formatError('has a malformed createdAt');
  const hostname = value['hostname'];
  const username = value['username'];
  if (!isText(hostname)) throw formatError('has a malformed hostname');
  if (!isText(username)) throw formatError('has a malformed username');
  const kdf = validateKdf(value['kdf']);
  const key = value['key'];
  if (typeof key !== 'string' || !isCanonicalBase64(key, KEY_ENVELOPE_BYTES)) throw formatError(`key is not the base64 of a ${KEY_ENVELOPE_BYTES}-byte envelope`);
  return { version: 1, createdAt, hostname, username, kdf, key };
}

function validateKdf(value: unknown): KdfParams {
  if (!isPlainObject(value)) throw formatError('has no kdf object');
  onlyKeys(value, ['name', 'N', 'r', 'p', 'salt'], 'key file kdf');
  if (value['name'] !== 'scrypt') throw formatError('names a kdf other than scrypt');
  const { N, r, p, salt } = value;
  const bad = costProblem(N, r, p);
  if (bad) throw formatError(`has scrypt parameters out of bounds: ${bad}`);
  if (typeof salt !== 'string' || !isCanonicalBase64(salt, SALT_BYTES)) throw formatError(`has a salt that is not the base64 of ${SALT_BYTES} bytes`);
  return { name: 'scrypt', N: N as number, r: r as number, p: p as number, salt };
}

/** Why (N, r, p) is refused, or null when it is within KDF_BOUNDS. */
function costProblem(N: unknown, r: unknown, p: unknown): string | null {
  const { minLogN, maxLogN, maxR, maxP, maxMemory } = KDF_BOUNDS;
  if (typeof N !== 'number' || !Number.isInteger(N) || N < 2 ** minLogN || N > 2 ** maxLogN || (N & (N - 1)) !== 0) return `N must be a power of two in 2^${minLogN}..2^${maxLogN}`;
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1 || r > maxR) return `r must be an integer in 1..${maxR}`;
  if (typeof p !== 'number' || !Number.isInteger(p) || p < 1 || p > maxP) return `p must be an integer in 1..${maxP}`;
  if (128 * N * r * p > maxMemory) return `128*N*r*p must be at most ${maxMemory}`;
  return null;
}

function scryptKek(password: Buffer, kdf: KdfParams): Promise<Buffer> {
  const salt = Buffer.from(kdf.salt, 'base64');
  // OpenSSL wants room for V (128*r*(N+2) bytes) and B (128*r*p bytes); the bounds keep this near 1 GiB at most.
  const maxmem = 128 * kdf.r * (kdf.N + kdf.p + 2) + 1024 * 1024;
  return new Promise((resolve, reject) => {
    crypto.scrypt(password, salt, KEY_BYTES, { N: kdf.N, r: kdf.r, p: kdf.p, maxmem }, (err, key) => {
      if (err) reject(new AdminError(ErrorCodes.INTERNAL, `scrypt failed: ${err.message}`));
      else resolve(key);
    });
  });
}

function checkPassword(password: Buffer): void {
  if (!Buffer.isBuffer(password) || password.length === 0) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'the password is empty');
}

function formatError(what: string): SealError {
  return new SealError('format', `key file ${what}`);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v);
}

function onlyKeys(obj: Record<string, unknown>, allowed: string[], what: string): void {
  for (const k of Object.keys(obj)) if (!allowed.includes(k)) throw new SealError('format', `${what} has an unknown field ${JSON.stringify(k).slice(0, 40)}`);
}

/** Printable (no control characters: `key list` prints these, and a hostile store writes them). */
function isText(v: unknown): v is string {
  // eslint-disable-next-line no-control-regex
  return typeof v === 'string' && v.length <= MAX_TEXT && !/[\u0000-\u001f\u007f-\u009f]/.test(v);
}

function isCanonicalBase64(s: string, bytes: number): boolean {
  return Buffer.from(s, 'base64').toString('base64') === s && Buffer.from(s, 'base64').length === bytes;
}

/** Canonical JSON of flat or nested plain values: keys sorted, no whitespace. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (typeof v === 'object' && v !== null) {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}
