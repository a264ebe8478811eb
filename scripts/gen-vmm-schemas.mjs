#!/usr/bin/env node
// Writes src/api/vmm-schemas.generated.ts: hangar-vmm's control-API schemas (src/api/vmm.ts,
// TypeBox) as plain JSON, which the VMM checks bodies against without loading TypeBox at
// start-up. Run after `npm run build` whenever src/api/vmm.ts changes; test/unit/vmm-config.test.ts
// fails while the two differ.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const api = await import(path.join(root, 'dist', 'src', 'api', 'vmm.js'));
fs.writeFileSync(path.join(root, 'src', 'api', 'vmm-schemas.generated.ts'), api.vmmSchemasModule());
console.log('wrote src/api/vmm-schemas.generated.ts');
