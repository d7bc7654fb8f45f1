import { randomBytes } from 'node:crypto';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { isStorageError, type Storage } from '../storage/storage.js';
import { CryptoPool, defaultCryptoThreads } from './crypto-pool.js';
import { SEAL_MAGIC, deriveKeys, keyFingerprint, newMasterKey, type KdfCost } from './crypto/index.js';
import { CHUNK_SIZE, FORMAT_VERSION, FORMAT_V3, canonicalJson, type RepoConfig } from './format.js';
import { PlainCodec } from './plain-codec.js';
import type { RepoCodec } from './repo-codec.js';
import { MAX_KEYS_TRIED, addKey, copyKeys, keyName, listKeys, unlock, type ListedKey, type PasswordSource } from './repository-keys.js';
import { SealedCodec } from './sealed-codec.js';
import * as ops from './sealed-ops.js';

/** How a repository is opened (Repository.open, RepositoryAccess). */
export interface OpenOptions {
  /** Create the repository when there is none: encrypted, unless `insecureNoEncryption`. */
  create?: boolean;
  /** The password, asked for only when the repository is (or, created, will be) encrypted. */
  password?: PasswordSource | null;
  /**
   * Said explicitly: a repository created now is not encrypted (format 3, `encryption: none`), and
   * new data may be written into one that is not (Repository.assertWritable).
   */
  insecureNoEncryption?: boolean;
  /** Said explicitly: new data may be written into a format 2 repository (Repository.assertWritable). */
  allowFormat2?: boolean;
  /** The key derivation's cost for a key made by `create` (default DEFAULT_KDF_COST: ~0.5 s here). */
  kdfCost?: KdfCost;
  /** Worker threads for an encrypted repository's crypto (default: defaultCryptoThreads()); 0: the calling thread. */
  cryptoThreads?: number;
  /**
   * Start the crypto threads while the key is derived, not at the first blob: for a command that opens
   * blobs as soon as the repository is open (a restore, a copy's source, a verify), which then finds
   * them running (a thread takes 60-100 ms to answer its first call, the key's derivation 0.2-0.3 s; a
   * restore of 1 GiB from file:// went from 2.78 to 2.53 s, medians of 8). Not for a backup: its
   * threads start with its work, while it reads its first files, and starting them during the key's
   * making slowed that on 2 cores for nothing (measured). Not for a long-lived agent, whose threads
   * start with its first backup rather than idle beside the node from its start. Nothing is started for
   * a repository that is not encrypted; the threads are stopped where the open fails.
   */
  startThreads?: boolean;
  /**
   * Crypto threads lent by the caller (an agent's, whose first thread also does its log archive's work:
   * archive-threads.ts): an encrypted repository's codec uses them instead of a pool of its own, and
   * never closes them, nor does a failed open; the lender does, after every repository opened with
   * them. `cryptoThreads` and `startThreads` then do not apply.
   */
  threads?: CryptoPool;
  /**
   * A master key already unlocked, and the id of the key object that holds it (a copy's source: a
   * destination made with its keys holds the same key objects). Tried first: where the repository holds
   * a key of that id and its config authenticates under that master, it opens without a password and
   * without the key derivation; anywhere else the password opens it, as without this.
   */
  knownKey?: { master: Buffer; keyId: string };
}

/** What opening established: the config (checked), the codec for its format, the key in use. */
export interface OpenedFormat {
  config: RepoConfig;
  codec: RepoCodec;
  /** The key that opened it (null: not encrypted). */
  keyId: string | null;
  /** Names local caches made under this repository and key (the hash cache): a cache of another is never trusted. */
  cacheTag: string;
  /** The master key (encrypted repositories), for key management; never logged or shown. */
  master: Buffer | null;
  /**
   * Names the key (encrypted repositories: keyFingerprint, an HMAC of a fixed label under a key derived
   * from the master, which reveals nothing of it), or null. Two repositories with the same one seal and
   * name blobs alike: a copy moves their packs as they are.
   */
  keyFingerprint: string | null;
  /**
   * Why new data must not go into this repository (it is not encrypted, and the options did not say
   * that is meant), or null. Reads, prune and verify are never refused for it.
   */
  plaintextRefusal: AdminError | null;
}

/**
 * Reads a repository's config and decides its format (docs/FORMAT.md, "Format 3"), creating it if
 * asked. Refuses, each with a named error:
 * - a sealed config with no key that opens it (WRONG_PASSWORD), or none given (PASSWORD_REQUIRED);
 * - a config that claims no encryption while `keys/` holds keys: a downgrade (CORRUPT);
 * - a sealed config that does not authenticate under any key (WRONG_PASSWORD: indistinguishable);
 * and notes whether new data may go in unencrypted (plaintextRefusal: PLAINTEXT_REFUSED otherwise).
 */
export async function openFormat(storage: Storage, o: OpenOptions): Promise<OpenedFormat> {
  // Every open of an existing repository reads its keys (an encrypted one to unlock, a plain one to
  // refuse a downgrade): listed beside the config's read, one round trip of an S3 open rather than two.
  const keys = listKeys(storage, MAX_KEYS_TRIED);
  keys.catch(() => {}); // awaited by both opens below; unread where there is no config
  let stored: Buffer;
  try {
    stored = await storage.get('config');
  } catch (err) {
    if (!isStorageError(err, 'not-found')) throw err;
    if (!o.create) throw new AdminError(ErrorCodes.REPOSITORY_NOT_FOUND, `no backup repository at ${storage.description} (no config object)`);
    await refuseOverObjects(storage);
    return create(storage, o);
  }
  if (stored.subarray(0, SEAL_MAGIC.length).equals(SEAL_MAGIC)) return openSealed(storage, stored, o, keys);
  return openPlain(storage, stored, o, keys);
}

async function openPlain(storage: Storage, stored: Buffer, o: OpenOptions, keys: Promise<ListedKey[]>): Promise<OpenedFormat> {
  const config = parseConfig(storage, stored);
  if (config.version === FORMAT_V3 && config.encryption !== 'none') throw corrupt(storage, 'its config claims encryption but is not sealed');
  // A config that says "no encryption" beside keys is what an attacker who can write the store would
  // leave to make writers send plaintext: refused, whatever it claims. (Listed before the config was
  // read: the store's contents are the attacker's either way, and a plain repository is made without keys.)
  if ((await keys).length > 0) throw corrupt(storage, 'its config claims no encryption, but keys/ holds keys: refused (a downgrade)');
  const plaintextRefusal =
    config.version === FORMAT_VERSION
      ? o.allowFormat2
        ? null
        : new AdminError(
            ErrorCodes.PLAINTEXT_REFUSED,
            `${storage.description} is a format 2 repository (not encrypted): new backups go there only with the flag that allows format 2 (backup.allowFormat2, --backup-allow-format-2); copy it into an encrypted one instead`,
          )
      : o.insecureNoEncryption
        ? null
        : new AdminError(
            ErrorCodes.PLAINTEXT_REFUSED,
            `${storage.description} was made without encryption: new backups go there only when that is said again (backup.insecureNoEncryption, --backup-insecure-no-encryption)`,
          );
  return { config, codec: new PlainCodec(), keyId: null, cacheTag: config.id, master: null, keyFingerprint: null, plaintextRefusal };
}

async function openSealed(storage: Storage, stored: Buffer, o: OpenOptions, listed: Promise<ListedKey[]>): Promise<OpenedFormat> {
  const { knownKey } = o;
  const known = knownKey ? await openWithKnownKey(storage, stored, knownKey, await listed) : null;
  if (known && knownKey) return sealedFormat(storage, known, Buffer.from(knownKey.master), knownKey.keyId, o);
  if (!o.password) {
    throw new AdminError(ErrorCodes.PASSWORD_REQUIRED, `${storage.description} is encrypted: give its password (--password-file, --password-command, NODE_ADMIN_PASSWORD_FILE, or a systemd credential)`);
  }
  const { password: source } = o;
  return withEarlyPool(o, async (pool) => {
    // The keys listed before the password is asked for: from the password on, nothing but the key
    // derivation stands before the open (a caller may start other work once it has handed the password
    // over, as the CLI's copy loads an S3 destination's SDK, and it then overlaps the derivation).
    // A repository made meanwhile (keys first, then its config) may have been listed before its keys
    // were stored: listed again then, rather than calling the password wrong.
    let keys = await listed;
    if (keys.length === 0) keys = await listKeys(storage, MAX_KEYS_TRIED);
    const password = await source();
    let config: RepoConfig | null = null;
    const { master, keyId } = await unlock(storage, password, async (candidate) => {
      try {
        config = parseConfig(storage, ops.openObject(deriveKeys(candidate), 'config', stored, 1024 * 1024));
        return true;
      } catch {
        return false; // another repository's key, or a config that does not authenticate under this one
      }
    }, keys).finally(() => password.fill(0));
    return sealedFormat(storage, config!, master, keyId, o, pool);
  });
}

/**
 * Runs an encrypted open with the crypto pool its codec will get: the lent one (`o.threads`, left as it
 * is); else started now where `o.startThreads` asks (so that it starts during the key's derivation), or
 * null (sealedFormat makes one that starts at the first blob). A pool started here is stopped if the
 * open fails.
 */
async function withEarlyPool(o: OpenOptions, open: (pool: CryptoPool | null) => Promise<OpenedFormat>): Promise<OpenedFormat> {
  if (o.threads) return open(o.threads); // lent: started and stopped by its owner
  const threads = o.cryptoThreads ?? defaultCryptoThreads();
  const pool = o.startThreads && threads > 0 ? new CryptoPool(threads) : null;
  pool?.start();
  try {
    return await open(pool);
  } catch (err) {
    await pool?.close();
    throw err;
  }
}

/**
 * The config `stored`, opened with `known.master`, where the repository also holds a key object of
 * `known.keyId` (a key of the same id wraps the same master: ids are random, and a copy's keys keep
 * theirs); null otherwise. A config that authenticates under the master was sealed by a holder of it,
 * which is what a password's unlock establishes too (unlock's `accept`).
 */
async function openWithKnownKey(storage: Storage, stored: Buffer, known: { master: Buffer; keyId: string }, keys: ListedKey[]): Promise<RepoConfig | null> {
  let config: RepoConfig;
  try {
    config = parseConfig(storage, ops.openObject(deriveKeys(known.master), 'config', stored, 1024 * 1024));
  } catch {
    return null; // another master: the password decides
  }
  return keys.some((k) => k.id === known.keyId) ? config : null;
}

/** The opened format of an encrypted repository; its codec gets `pool` where given (withEarlyPool), else a pool of its own. */
function sealedFormat(storage: Storage, config: RepoConfig, master: Buffer, keyId: string, o: OpenOptions, pool: CryptoPool | null = null): OpenedFormat {
  if (config.version !== FORMAT_V3 || config.encryption !== 'aes-256-gcm') throw corrupt(storage, 'its sealed config is not of format 3 with encryption');
  const keys = deriveKeys(master);
  const threads = o.cryptoThreads ?? defaultCryptoThreads();
  const lent = o.threads ?? null;
  const used = pool ?? lent ?? (threads > 0 ? new CryptoPool(threads) : null);
  const codec = new SealedCodec(keys, used, used !== null && used !== lent);
  const fingerprint = keyFingerprint(keys);
  return { config, codec, keyId, cacheTag: `${config.id}-${fingerprint}`, master, keyFingerprint: fingerprint, plaintextRefusal: null };
}

/**
 * Makes a repository at `storage` (where there is none) with the keys of an encrypted one: the same
 * master key, its key objects copied as they are (so the source's passwords open it), the same
 * encryption, compression and chunk size; a config of its own (a new id). Blobs then have the same ids
 * and seals in both, and a copy moves packs byte for byte. The keys go first, as in `create`: a make cut
 * short leaves keys and no config, and may be run again.
 */
export async function createWithKeys(storage: Storage, source: { config: RepoConfig; master: Buffer; keyId: string; keys: Storage }, o: OpenOptions): Promise<OpenedFormat> {
  if ((await storage.stat('config')) !== null) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `${storage.description} is a repository already`);
  await refuseOverObjects(storage);
  await copyKeys(source.keys, storage);
  const config: RepoConfig = { ...source.config, id: randomBytes(16).toString('hex'), createdAt: new Date().toISOString() };
  await storage.put('config', ops.sealObject(deriveKeys(source.master), 'config', Buffer.from(canonicalJson(config))));
  return sealedFormat(storage, config, Buffer.from(source.master), source.keyId, o);
}

async function create(storage: Storage, o: OpenOptions): Promise<OpenedFormat> {
  const base = { format: 'node-admin-repository' as const, id: randomBytes(16).toString('hex'), chunkSize: CHUNK_SIZE, createdAt: new Date().toISOString() };
  if (o.insecureNoEncryption) {
    const config: RepoConfig = { ...base, version: FORMAT_V3, encryption: 'none', compression: 'none' };
    await storage.put('config', Buffer.from(canonicalJson(config)));
    return openFormat(storage, { ...o, create: false });
  }
  if (!o.password) {
    throw new AdminError(
      ErrorCodes.PASSWORD_REQUIRED,
      `a new repository at ${storage.description} is encrypted: give it a password (--password-file, --password-command, NODE_ADMIN_PASSWORD_FILE, a systemd credential), or say --insecure-no-encryption`,
    );
  }
  const { password: source } = o;
  return withEarlyPool(o, async (pool) => {
    const password = await source();
    const master = newMasterKey();
    const config: RepoConfig = { ...base, version: FORMAT_V3, encryption: 'aes-256-gcm', compression: 'brotli' };
    // The key first: a create cut short leaves a key and no config (the next create makes both again),
    // never a config no key opens.
    const keyId = await addKey(storage, master, password, o.kdfCost);
    password.fill(0);
    // The key's derivation took a while: a config that appeared meanwhile (another creator's, or the
    // repository of a location that was unreachable when it looked empty and is back) is opened, never
    // stored over — its objects are sealed under its own master key. This creator's key goes.
    if ((await storage.stat('config')) !== null) {
      await storage.delete(keyName(keyId)).catch(() => {});
      await pool?.close(); // that open starts its own
      return openFormat(storage, { ...o, create: false });
    }
    await storage.put('config', ops.sealObject(deriveKeys(master), 'config', Buffer.from(canonicalJson(config))));
    // Two creators racing: the last config stored wins. Read it back; the one whose config lost opens
    // the winner's through the keys (with the same password, else WRONG_PASSWORD), and never writes
    // with a master nobody can open.
    const back = await storage.get('config');
    try {
      const got = parseConfig(storage, ops.openObject(deriveKeys(master), 'config', back, 1024 * 1024));
      if (got.id === config.id) return sealedFormat(storage, got, master, keyId, o, pool);
    } catch {
      // another creator's config
    }
    await pool?.close();
    return openFormat(storage, { ...o, create: false });
  });
}

/** Where only a repository's data lives (not keys/: a create cut short leaves a key, and may be run again). */
const DATA_PREFIXES = ['snapshots/', 'index/', 'data/', 'wal/'];

/**
 * A location without a config that holds a repository's data lost its config (deleted by the store, or
 * by a mistake): a new repository made there would seal new objects under a new master key beside the
 * old ones, which no key of it opens, and every listing would fail on them. Refused (CORRUPT) instead,
 * before anything is stored: the operator puts the config and keys back, or chooses an empty location.
 */
async function refuseOverObjects(storage: Storage): Promise<void> {
  // Listed at once: a round trip each to a remote store, before anything else can be made there.
  const found = await Promise.all(
    DATA_PREFIXES.map(async (prefix) => {
      for await (const obj of storage.list(prefix)) return obj.name;
      return null;
    }),
  );
  const name = found.find((n) => n !== null);
  if (name) throw corrupt(storage, `it has no config, but holds a repository's objects (${name}): no new repository is made over them (put its config and keys back, or use an empty location)`);
}

/** A config's JSON, checked field by field (CORRUPT naming the repository otherwise). */
function parseConfig(storage: Storage, bytes: Buffer): RepoConfig {
  let c: RepoConfig;
  try {
    c = JSON.parse(bytes.toString('utf8')) as RepoConfig;
  } catch {
    throw corrupt(storage, 'its config is not JSON');
  }
  if (c?.format !== 'node-admin-repository' || (c.version !== FORMAT_VERSION && c.version !== FORMAT_V3)) {
    throw corrupt(storage, `it is not a node-admin repository of a version this node-admin reads (${FORMAT_VERSION} or ${FORMAT_V3})`);
  }
  if (typeof c.id !== 'string' || !/^[0-9a-f]{32}$/.test(c.id)) throw corrupt(storage, 'its config has no valid id');
  if (c.chunkSize !== CHUNK_SIZE) throw corrupt(storage, `its chunk size ${String(c.chunkSize)} is not ${CHUNK_SIZE}`);
  return c;
}

function corrupt(storage: Storage, why: string): AdminError {
  return new AdminError(ErrorCodes.CORRUPT, `${storage.description} is refused: ${why}`);
}
