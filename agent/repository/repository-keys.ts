import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { mapLimit } from '../fs/map-limit.js';
import { isStorageError, type Storage } from '../storage/storage.js';
import { KEY_FILE_MAX_BYTES, isKeyId, parseKeyFile, serializeKeyFile, unwrapMasterKey, wrapMasterKey, type KdfCost, type KeyFile } from './crypto/index.js';

/**
 * Where a repository's password comes from, asked only when one is needed (an encrypted repository, or
 * a new one). Resolves with the password's bytes; rejects with a one-line AdminError saying what is
 * missing. See password-source.ts for the ways an operator gives one.
 */
export type PasswordSource = () => Promise<Buffer>;

export const KEYS_PREFIX = 'keys/';
/** The most key files an open tries (see unlock). */
export const MAX_KEYS_TRIED = 32;
export const keyName = (id: string) => `${KEYS_PREFIX}${id}`;

/** A key object as listed: its id, its bytes as stored, and the file (null when it does not parse: shown, never used). */
export interface ListedKey {
  id: string;
  /**
   * Null for an object larger than any key file (KEY_FILE_MAX_BYTES): not read where the listing says
   * so, dropped where it turns out so; never copied. Null too for every key of a listing longer than
   * listKeys' `readAtMost`: none of them read.
   */
  stored: Buffer | null;
  file: KeyFile | null;
}

/** Key objects read at once by listKeys: a repository with several keys is read in one round trip or two. */
const KEY_READS_AT_ONCE = 8;

/**
 * Every `keys/<id>` object, in id order. A key file that does not parse is listed with `file` null.
 * Where the listing holds more than `readAtMost` (an open's MAX_KEYS_TRIED: unlock refuses more), none
 * is read: a store stuffed with small key objects costs an open one listing, not a read each.
 */
export async function listKeys(storage: Storage, readAtMost = Infinity): Promise<ListedKey[]> {
  const listed: { id: string; size: number }[] = [];
  for await (const obj of storage.list(KEYS_PREFIX)) {
    const id = obj.name.slice(KEYS_PREFIX.length);
    if (isKeyId(id)) listed.push({ id, size: obj.size });
  }
  if (listed.length > readAtMost) return listed.map(({ id }) => ({ id, stored: null, file: null }));
  const read = await mapLimit(listed, KEY_READS_AT_ONCE, async ({ id, size }): Promise<ListedKey | null> => {
    // A store's contents are untrusted: objects of any size planted in keys/ are not read into memory
    // (listed, so that `key list` shows them and `key remove` can take them away).
    if (size > KEY_FILE_MAX_BYTES) return { id, stored: null, file: null };
    let stored: Buffer;
    try {
      stored = await storage.get(keyName(id));
    } catch (err) {
      if (isStorageError(err, 'not-found')) return null; // removed meanwhile
      throw err;
    }
    if (stored.length > KEY_FILE_MAX_BYTES) return { id, stored: null, file: null }; // the listing's size was not the object's
    let file: KeyFile | null = null;
    try {
      file = parseKeyFile(stored);
    } catch {
      // listed, never used
    }
    return { id, stored, file };
  });
  return read.filter((k): k is ListedKey => k !== null);
}

/**
 * The master key, from the first of `keys` (listKeys of `storage`, listed by the caller before it asked
 * for the password) that `password` opens and whose master `accept` takes (it opens the repository's
 * config: a key file copied in from another repository unwraps, but is not this repository's).
 * WRONG_PASSWORD when none does; the message never holds the password.
 */
export async function unlock(
  storage: Storage,
  password: Buffer,
  accept: (master: Buffer) => Promise<boolean>,
  keys: ListedKey[],
): Promise<{ master: Buffer; keyId: string }> {
  // Each try costs a key derivation (about half a second): a store stuffed with key files must not make
  // an open take hours. More keys than this is not a repository an operator keeps.
  if (keys.length > MAX_KEYS_TRIED) {
    throw new AdminError(ErrorCodes.CORRUPT, `${storage.description} holds ${keys.length} key files, more than the ${MAX_KEYS_TRIED} an open tries: remove the ones not in use`);
  }
  for (const { id, file } of keys) {
    if (!file) continue;
    const master = await unwrapMasterKey(file, password, id).catch(() => null);
    if (master && (await accept(master))) return { master, keyId: id };
  }
  throw new AdminError(
    ErrorCodes.WRONG_PASSWORD,
    `no key of ${storage.description} opens with the password given (${keys.length} key${keys.length === 1 ? '' : 's'} tried; or its keys or config are damaged)`,
  );
}

/** Stores the master key wrapped by `password` as a new key object; returns its id. */
export async function addKey(storage: Storage, master: Buffer, password: Buffer, cost?: KdfCost): Promise<string> {
  const id = randomBytes(16).toString('hex');
  const file = await wrapMasterKey(master, password, id, cost, { hostname: os.hostname(), username: userName() });
  await storage.put(keyName(id), serializeKeyFile(file));
  return id;
}

/**
 * Copies every key object of `from` into `to` as it is (same id, same wrapped master): the same passwords
 * open both. An object larger than any key file is no key (listKeys never reads it): left behind.
 * Returns how many were copied.
 */
export async function copyKeys(from: Storage, to: Storage): Promise<number> {
  const keys = (await listKeys(from)).filter((k): k is ListedKey & { stored: Buffer } => k.stored !== null);
  for (const { id, stored } of keys) await to.put(keyName(id), stored);
  return keys.length;
}

/** Removes key `id`; the last key that opens the repository cannot go (nothing could open it after). */
export async function removeKey(storage: Storage, id: string): Promise<void> {
  const keys = await listKeys(storage);
  if (!keys.some((k) => k.id === id)) throw new AdminError(ErrorCodes.NOT_FOUND, `no key ${id} in ${storage.description}`);
  const others = keys.filter((k) => k.id !== id && k.file !== null);
  if (others.length === 0) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `key ${id} is the repository's last key: it cannot be removed (add another first)`);
  await storage.delete(keyName(id));
}

function userName(): string {
  try {
    return os.userInfo().username.slice(0, 255);
  } catch {
    return '';
  }
}
