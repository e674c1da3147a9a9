/* hash.h - the engine's two hash functions, and nothing else hashes bytes.
 *
 * rec_hash_keyed: SipHash-1-3 (Aumasson and Bernstein, "SipHash: a fast
 * short-input PRF", with 1 compression and 3 finalisation rounds) under a
 * 128-bit key drawn once per process from getrandom(). Every hash table
 * keyed by what clients send (the id maps, the batch index of the store)
 * uses it: without the key, nobody can choose ids that collide, so a
 * table cannot be flooded into its linear worst case. Its values differ
 * from one process to the next: never store them or send them.
 *
 * rec_hash_stable: one fixed 64-bit function (FNV-1a with the offset basis
 * 1469598103934665603, then a multiply-xorshift finish), the same on every
 * machine, in every run and in every version. For what must agree across
 * processes or runs: the experiment split of pipelines, hashed feature
 * dimensions, content hashes of script files. Not for tables keyed by
 * untrusted input: anyone can compute collisions of it.
 */
#ifndef REC_HASH_H
#define REC_HASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-1-3 of data[0..len) under key (16 bytes: k0 then k1, each
 * little-endian, as in the paper). */
uint64_t rec_hash_siphash13(const uint8_t key[16], const void *data, size_t len);

/* SipHash-1-3 of data under the process key. The key is drawn on the first
 * call (any thread) unless rec_hash_seed_set came first. */
uint64_t rec_hash_keyed(const void *data, size_t len);

/* The process key, as two little-endian words (drawn now if not yet). */
void rec_hash_seed_get(uint64_t *k0, uint64_t *k1);

/* Replace the process key: for tests that need the same hashes on every
 * run. Only before any table that uses rec_hash_keyed holds entries (they
 * would be lost to their lookups), and not while another thread hashes. */
void rec_hash_seed_set(uint64_t k0, uint64_t k1);

/* rec_hash_stable in pieces, for data in several parts:
 *   h = REC_HASH_STABLE_INIT; h = rec_hash_stable_add(h, a, an); ...
 *   rec_hash_stable_end(h)
 * equals rec_hash_stable of the parts' concatenation. */
#define REC_HASH_STABLE_INIT 1469598103934665603ull
uint64_t rec_hash_stable_add(uint64_t h, const void *data, size_t len);
uint64_t rec_hash_stable_end(uint64_t h);

/* The fixed hash of data[0..len). */
uint64_t rec_hash_stable(const void *data, size_t len);

#endif
