/**
 * A copy's destination made with the source's keys opens with the source's master key (OpenOptions
 * knownKey): no password asked, no second key derivation. Anywhere the master is not the
 * destination's, or the destination no longer holds the key object it came in, the password decides,
 * as without knownKey. Each case counts the password source's calls: what proves the path taken.
 */
import { describe, expect, it } from 'vitest';
import { Repository } from '../dist/agent/repository/repository.js';
import { openCopyDestination } from '../dist/agent/backup/copy-session.js';
import { addKey, removeKey } from '../dist/agent/repository/repository-keys.js';
import { MemoryStorage } from '../dist/agent/storage/memory-storage.js';
import { TEST_KDF, TEST_PASSWORD } from './support/test-password.js';

/** A password source that counts how often it was asked. */
function counted(password = TEST_PASSWORD): { source: () => Promise<Buffer>; calls: () => number } {
  let n = 0;
  return {
    source: async () => {
      n++;
      return Buffer.from(password);
    },
    calls: () => n,
  };
}

async function sourceRepository(): Promise<Repository> {
  return Repository.open(new MemoryStorage(), { create: true, cryptoThreads: 0, password: async () => Buffer.from(TEST_PASSWORD), kdfCost: TEST_KDF });
}

describe('opening a copy destination with the source key', () => {
  it('opens a destination made with the source keys without asking for a password', async () => {
    const source = await sourceRepository();
    const storage = new MemoryStorage();
    const made = await Repository.createWithKeysOf(storage, source, { cryptoThreads: 0 });
    await made.putObject('wal/t/mark/one', Buffer.from('sealed under the shared master'));
    const pw = counted();
    const { repo, created } = await openCopyDestination(storage, source, { password: pw.source, cryptoThreads: 0 });
    expect(created).toBe(false);
    expect(pw.calls()).toBe(0);
    expect(repo.config.id).toBe(made.config.id);
    expect(repo.keyId).toBe(source.keyId);
    expect((await repo.getObject('wal/t/mark/one')).toString()).toBe('sealed under the shared master');
  });

  it('asks for the password where the destination has a master of its own', async () => {
    const source = await sourceRepository();
    const storage = new MemoryStorage();
    const other = await Repository.open(storage, { create: true, cryptoThreads: 0, password: async () => Buffer.from(TEST_PASSWORD), kdfCost: TEST_KDF });
    const pw = counted();
    const { repo } = await openCopyDestination(storage, source, { password: pw.source, cryptoThreads: 0 });
    expect(pw.calls()).toBe(1);
    expect(repo.config.id).toBe(other.config.id);
    expect(repo.keyId).toBe(other.keyId);
    // And a wrong password there is refused, as ever: the source's master is no way around it.
    await expect(openCopyDestination(storage, source, { password: counted('not the password').source, cryptoThreads: 0 })).rejects.toMatchObject({ code: 'WRONG_PASSWORD' });
  });

  it('asks for the password where the key the source opened with is gone from the destination', async () => {
    const source = await sourceRepository();
    const storage = new MemoryStorage();
    await Repository.createWithKeysOf(storage, source, { cryptoThreads: 0 });
    // The destination's operator changed its password: a new key object, the old one removed.
    await addKey(storage, source.keyAccess().master, Buffer.from('the destination password'), TEST_KDF);
    await removeKey(storage, source.keyId!);
    const pw = counted('the destination password');
    const { repo } = await openCopyDestination(storage, source, { password: pw.source, cryptoThreads: 0 });
    expect(pw.calls()).toBe(1);
    expect(repo.keyId).not.toBe(source.keyId);
  });
});
