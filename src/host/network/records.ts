/**
 * Networks in SQLite (table `networks`, see the migration in store.ts).
 * NICs are not stored here: they are part of each VM's spec.
 */
import type Database from 'better-sqlite3';
import { HangarError } from '../../common/errors.js';
import type { NetworkKind } from './schemas.js';

export interface NetworkRecord {
  name: string;
  kind: NetworkKind;
  /** "a.b.c.d/p" for nat and isolated networks; null for bridged ones. */
  subnet: string | null;
  /** "PREFIX::/64" of a nat or isolated network with IPv6; null: IPv4 only (bridged networks, `--ipv6 none`, networks made before IPv6). */
  ipv6: string | null;
  /** Hangar's bridge (hgb-…), or the existing host bridge a bridged network joins. */
  bridge: string;
  description: string;
  createdAt: string;
}

interface Row { name: string; kind: string; subnet: string | null; ipv6: string | null; bridge: string; description: string; created_at: string }

const fromRow = (r: Row): NetworkRecord => ({
  name: r.name, kind: r.kind as NetworkKind, subnet: r.subnet, ipv6: r.ipv6 ?? null, bridge: r.bridge, description: r.description, createdAt: r.created_at,
});

export class NetworkRecords {
  constructor(private readonly db: Database.Database) {}

  list(): NetworkRecord[] {
    return (this.db.prepare('SELECT * FROM networks ORDER BY name').all() as Row[]).map(fromRow);
  }

  get(name: string): NetworkRecord | null {
    const r = this.db.prepare('SELECT * FROM networks WHERE name = ?').get(name) as Row | undefined;
    return r ? fromRow(r) : null;
  }

  require(name: string): NetworkRecord {
    const n = this.get(name);
    if (!n) throw new HangarError('NOT_FOUND', `no network named "${name}"`, { network: name });
    return n;
  }

  insert(n: NetworkRecord): void {
    try {
      this.db.prepare('INSERT INTO networks (name, kind, subnet, ipv6, bridge, description, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
        .run(n.name, n.kind, n.subnet, n.ipv6, n.bridge, n.description, n.createdAt);
    } catch (e) {
      if (e instanceof Error && /UNIQUE constraint failed: networks\.name/.test(e.message)) {
        throw new HangarError('ALREADY_EXISTS', `a network named "${n.name}" already exists`, { network: n.name });
      }
      if (e instanceof Error && /UNIQUE constraint failed: networks\.bridge/.test(e.message)) {
        throw new HangarError('ALREADY_EXISTS', `host link ${n.bridge} is already used by another network`, { bridge: n.bridge });
      }
      throw e;
    }
  }

  update(n: NetworkRecord): void {
    this.db.prepare('UPDATE networks SET subnet = ?, ipv6 = ?, description = ? WHERE name = ?').run(n.subnet, n.ipv6, n.description, n.name);
  }

  delete(name: string): void {
    this.db.prepare('DELETE FROM networks WHERE name = ?').run(name);
  }
}

export interface ForwardRecord {
  id: number;
  vm: string;
  proto: 'tcp' | 'udp';
  /** 0.0.0.0: every address of the host. */
  address: string;
  hostPort: number;
  guestPort: number;
  createdAt: string;
}

interface ForwardRow { id: number; vm: string; proto: string; address: string; host_port: number; guest_port: number; created_at: string }

const forwardFromRow = (r: ForwardRow): ForwardRecord => ({
  id: r.id, vm: r.vm, proto: r.proto as 'tcp' | 'udp', address: r.address, hostPort: r.host_port, guestPort: r.guest_port, createdAt: r.created_at,
});

export class ForwardRecords {
  constructor(private readonly db: Database.Database) {}

  list(vm?: string): ForwardRecord[] {
    const rows = vm === undefined
      ? this.db.prepare('SELECT * FROM port_forwards ORDER BY id').all()
      : this.db.prepare('SELECT * FROM port_forwards WHERE vm = ? ORDER BY id').all(vm);
    return (rows as ForwardRow[]).map(forwardFromRow);
  }

  insert(f: Omit<ForwardRecord, 'id'>): ForwardRecord {
    const info = this.db.prepare('INSERT INTO port_forwards (vm, proto, address, host_port, guest_port, created_at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(f.vm, f.proto, f.address, f.hostPort, f.guestPort, f.createdAt);
    return { ...f, id: Number(info.lastInsertRowid) };
  }

  delete(id: number): boolean {
    return this.db.prepare('DELETE FROM port_forwards WHERE id = ?').run(id).changes > 0;
  }

  deleteForVm(vm: string): number {
    return this.db.prepare('DELETE FROM port_forwards WHERE vm = ?').run(vm).changes;
  }
}
