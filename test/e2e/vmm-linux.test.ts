/**
 * The stock Debian 12 cloud kernel, booted by hangar-vmm through the 64-bit
 * boot protocol (ELF vmlinux entry), must print its banner, exactly our
 * command line, an e820 map equal to ours, our ACPI tables and the vCPUs of
 * our MADT. On hosts whose KVM emulates
 * guest kernel mode (nested KVM on PVM) it gets no further than early
 * setup within a test's time, which is all this checks; see docs/vmm.md.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { e820Map, E820_RAM } from '../../src/vmm/layout.js';
import { VMM_EXIT } from '../../src/vmm/exit-codes.js';
import { api, ConsoleClient, debianCloudKernel, kvmUsable, startVmm, type DebianKernel } from '../helpers/vmm.js';

let kernel: DebianKernel | null = null;
let why = '';
if (kvmUsable) {
  try { kernel = debianCloudKernel(); } catch (e) { why = `Debian cloud kernel not available: ${(e as Error).message}`; }
} else {
  why = 'no usable /dev/kvm';
}

test('Debian cloud kernel (ELF vmlinux, 2 vCPUs): banner, our command line, our e820 map, our initrd, our ACPI tables and both CPUs', { skip: kernel ? false : why, timeout: 300_000 }, async () => {
  const memMib = 256;
  const marker = `hangar.test=${process.pid}-${Date.now()}`;
  const cmdline = `console=ttyS0 earlyprintk=ttyS0 reboot=k panic=-1 ${marker}`;
  const vmm = await startVmm();
  try {
    // Any bytes do as an initrd here: the kernel reserves it early and unpacks it much later.
    const initrd = path.join(vmm.dir, 'initrd.img');
    const initrdSize = 300_000;
    fs.writeFileSync(initrd, Buffer.alloc(initrdSize, 0x5a));
    const con = await ConsoleClient.connect(vmm.consoleSock);
    assert.equal((await api(vmm.apiSock, 'PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: memMib })).status, 204);
    assert.equal((await api(vmm.apiSock, 'PUT', '/boot-source', { kernel_image_path: kernel!.vmlinux, initrd_path: initrd, boot_args: cmdline })).status, 204);
    assert.equal((await api(vmm.apiSock, 'PUT', '/actions', { action_type: 'InstanceStart' })).status, 204);
    // The kernel prints its hypervisor detection right after the e820 map.
    // Generous: ring 0 is emulated on these hosts, and a loaded host takes minutes where a quiet one takes ~40 s.
    await con.waitFor(/Hypervisor detected: KVM/, 150_000);
    assert.match(con.text, /Linux version 6\.1\.\d+-\d+-cloud-amd64/);
    const cmd = /Command line: (.*)\r?\n/.exec(con.text)?.[1];
    assert.equal(cmd, cmdline);
    const seen = [...con.text.matchAll(/BIOS-e820: \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\] (\w+)/g)].map((m) => ({
      addr: parseInt(m[1]!, 16), size: parseInt(m[2]!, 16) - parseInt(m[1]!, 16) + 1, type: m[3] === 'usable' ? E820_RAM : 2,
    }));
    assert.deepEqual(seen, e820Map(memMib * 2 ** 20));
    assert.match(con.text, /Hypervisor detected: KVM/);
    // ACPI: the kernel finds our RSDP and tables, and both vCPUs in the MADT.
    await con.waitFor(/smpboot: Allowing \d+ CPUs[^\n]*\n/, 120_000);
    assert.match(con.text, /ACPI: RSDP 0x00000000000E0000 000024 \(v02 HANGAR\)/);
    for (const sig of ['XSDT', 'FACP', 'DSDT', 'APIC']) assert.match(con.text, new RegExp(`ACPI: ${sig} 0x[0-9A-F]+ [0-9A-F]+ \\(v0\\d HANGAR HANGARVM`));
    assert.match(con.text, /IOAPIC\[0\]: apic_id 2, version \d+, address 0xfec00000, GSI 0-23/);
    assert.match(con.text, /smpboot: Allowing 2 CPUs, 0 hotplug CPUs/);
    // The initrd where the loader put it: page aligned at the top of RAM.
    const rd = /RAMDISK: \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\]/.exec(con.text);
    assert.ok(rd, 'kernel reports the initrd');
    const start = Math.floor((memMib * 2 ** 20 - initrdSize) / 4096) * 4096;
    assert.equal(parseInt(rd[1]!, 16), start);
    assert.equal(parseInt(rd[2]!, 16), Math.ceil((start + initrdSize) / 4096) * 4096 - 1);
    assert.equal((await api(vmm.apiSock, 'PUT', '/actions', { action_type: 'Stop' })).status, 204);
    assert.equal((await vmm.exited).code, VMM_EXIT.STOPPED);
    con.close();
  } finally {
    await vmm.cleanup();
  }
});
