import { MemoryStorage } from '../dist/agent/backup/storage/memory-storage.js';
import { runStorageConformance } from './support/storage-conformance.js';

runStorageConformance('memory', async () => ({ storage: new MemoryStorage(), cleanup: async () => {} }), { writer: true });
