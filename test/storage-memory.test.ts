import { MemoryStorage } from '../dist/agent/storage/memory-storage.js';
import { runStorageConformance } from './support/storage-conformance.js';

runStorageConformance('memory', async () => ({ storage: new MemoryStorage(), cleanup: async () => {} }), { writer: true });
