/**
 * A small client for hangar-vmm's control API (HTTP + JSON on a Unix socket),
 * typed by the API's schemas in src/api/vmm.ts. Errors come back as
 * HangarErrors carrying the VMM's code and message.
 */
import http from 'node:http';
import type {
  VmmActionType, VmmBootSource, VmmDrive, VmmInstanceInfo, VmmMachineConfig, VmmNetworkInterface, VmmSnapshotCreate, VmmSnapshotLoad, VmmVmInfo,
} from '../../api/vmm.js';
import { HangarError, type ErrorCode, ERROR_STATUS } from '../../common/errors.js';

export class VmmClient {
  constructor(readonly socketPath: string, private readonly timeoutMs = 10_000) {}

  request(method: string, urlPath: string, body?: unknown): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : JSON.stringify(body);
      const req = http.request({
        socketPath: this.socketPath, method, path: urlPath, timeout: this.timeoutMs, agent: false,
        headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {},
      }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => { text += c; });
        res.on('end', () => {
          let parsed: unknown;
          try { parsed = text ? JSON.parse(text) : undefined; } catch { parsed = text; }
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) { resolve(parsed); return; }
          const b = (parsed ?? {}) as { fault_message?: string; code?: string };
          const code = (b.code && b.code in ERROR_STATUS ? b.code : 'ENGINE_FAILED') as ErrorCode;
          reject(new HangarError(code, `hangar-vmm ${method} ${urlPath}: ${b.fault_message ?? `HTTP ${status}`}`));
        });
      });
      req.on('timeout', () => req.destroy(new HangarError('TIMEOUT', `hangar-vmm ${method} ${urlPath} did not answer within ${this.timeoutMs} ms`)));
      req.on('error', (e) => reject(e instanceof HangarError ? e : new HangarError('UNAVAILABLE', `hangar-vmm control socket ${this.socketPath}: ${e.message}`)));
      if (data) req.write(data);
      req.end();
    });
  }

  get(p: string): Promise<unknown> { return this.request('GET', p); }
  put(p: string, body: unknown): Promise<unknown> { return this.request('PUT', p, body); }

  instanceInfo(): Promise<VmmInstanceInfo> { return this.get('/') as Promise<VmmInstanceInfo>; }
  vmInfo(): Promise<VmmVmInfo> { return this.get('/vm') as Promise<VmmVmInfo>; }
  async putMachineConfig(body: VmmMachineConfig): Promise<void> { await this.put('/machine-config', body); }
  async putBootSource(body: VmmBootSource): Promise<void> { await this.put('/boot-source', body); }
  async putDrive(body: VmmDrive): Promise<void> { await this.put(`/drives/${encodeURIComponent(body.drive_id)}`, body); }
  async putNetworkInterface(body: VmmNetworkInterface): Promise<void> { await this.put(`/network-interfaces/${encodeURIComponent(body.iface_id)}`, body); }
  async putEntropy(): Promise<void> { await this.put('/entropy', {}); }
  async action(actionType: VmmActionType): Promise<void> { await this.put('/actions', { action_type: actionType }); }
  async patchVmState(state: 'Paused' | 'Resumed'): Promise<void> { await this.request('PATCH', '/vm', { state }); }
  async snapshotCreate(body: VmmSnapshotCreate): Promise<void> { await this.put('/snapshot/create', body); }
  async snapshotLoad(body: VmmSnapshotLoad): Promise<void> { await this.put('/snapshot/load', body); }
}
