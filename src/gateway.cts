#!/usr/bin/env -S node --initial-old-space-size=128
/**
 * The `gateway` executable (what `npm start`, the bin and the container run). A CommonJS
 * file, so that it runs before Node's ES module loader, which reads files on libuv's thread
 * pool and so creates the pool at its size of the moment.
 *
 * The pool is sized here: blob bytes are written with O_DIRECT, and such a write holds a pool
 * thread until the device has the data. With libuv's default of 4 threads at most 4 uploads
 * write at once (8 concurrent 32 MiB pushes ran at about 670 MiB/s with 4 threads, 760 with 8,
 * and no faster with 16). A UV_THREADPOOL_SIZE the operator sets is kept.
 */
const THREADPOOL_SIZE = 8;

process.env.UV_THREADPOOL_SIZE ??= String(THREADPOOL_SIZE);
void import('./main.js');
