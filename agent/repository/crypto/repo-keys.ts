import crypto from 'node:crypto';
import { KEY_BYTES, checkKey } from './envelope-format.js';

/**
 * A repository's working keys, each derived from the master key for one job and never used for another:
 * - `id`: HMAC key of blob content ids;
 * - `blob`: sealing key of blobs (inside packs);
 * - `object`: sealing key of every other object (config, snapshots, indexes, locks, log segments, ...);
 * - `cache`: the fingerprint that tags local caches made under this key (keyFingerprint).
 */
export interface RepoKeys {
  id: Buffer;
  blob: Buffer;
  object: Buffer;
  cache: Buffer;
}

/** A new random master key (32 bytes): the root every other key of a repository derives from. */
export function newMasterKey(): Buffer {
  return crypto.randomBytes(KEY_BYTES);
}

/** HKDF-SHA256(master, salt empty, info "node-admin v3 <purpose>"), 32 bytes per purpose. */
export function deriveKeys(master: Buffer): RepoKeys {
  checkKey(master, 'a master key');
  return {
    id: subkey(master, 'blob-id'),
    blob: subkey(master, 'blob'),
    object: subkey(master, 'object'),
    cache: subkey(master, 'cache'),
  };
}

function subkey(master: Buffer, purpose: string): Buffer {
  return Buffer.from(crypto.hkdfSync('sha256', master, Buffer.alloc(0), `node-admin v3 ${purpose}`, KEY_BYTES));
}

const FINGERPRINT_INPUT = 'node-admin v3 cache fingerprint';

/**
 * 32 hex digits that name this repository key without revealing it: a local cache (the backup's hash
 * cache) records the fingerprint it was made under and is trusted only under the same one.
 */
export function keyFingerprint(keys: RepoKeys): string {
  checkKey(keys.cache, 'the cache key');
  return crypto.createHmac('sha256', keys.cache).update(FINGERPRINT_INPUT, 'utf8').digest('hex').slice(0, 32);
}
