#!/usr/bin/env -S GLIBC_TUNABLES=glibc.malloc.hugetlb=1 node --initial-old-space-size=128
/**
 * The `gateway` executable (what `npm start`, the bin and the container run). A CommonJS
 * file, so that it runs before Node's ES module loader, which reads files on libuv's thread
 * pool and so creates the pool at its size of the moment.
 *
 * The pool is sized here: an upload's flushes (fdatasync), and its writes where they are made
 * with O_DIRECT (see src/storage/fs.ts), each hold a pool thread until the device has the data.
 * With libuv's default of 4 threads at most 4 uploads did so at once (8 concurrent 32 MiB
 * pushes ran at about 670 MiB/s with 4 threads, 760 with 8, and no faster with 16; measured
 * with O_DIRECT writes). A UV_THREADPOOL_SIZE the operator sets is kept.
 *
 * The shebang (like `npm start` and the container) sets GLIBC_TUNABLES=glibc.malloc.hugetlb=1,
 * so that malloc asks for transparent huge pages. Socket reads allocate with malloc, the memory
 * is freed when the garbage collector collects their buffers, glibc returns it to the system,
 * and the next reads fault it in again 4 KiB at a time: without the tunable a 256 MiB push took
 * about 33,000 page faults and twice the CPU, and on the virtual machine measured that limited
 * blob pushes (see README, Benchmarks). It must be set before node starts: the C library reads
 * it when the process loads.
 */
const THREADPOOL_SIZE = 8;

process.env.UV_THREADPOOL_SIZE ??= String(THREADPOOL_SIZE);
void import('./main.js');
