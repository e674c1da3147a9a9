/* store.h - LMDB storage: one environment, fixed named databases, batched
 * writes.
 *
 * The store knows byte keys and byte values only; key layouts belong to the
 * engine. Writes are collected in a rec_batch (a replayable list of
 * operations) and applied by rec_store_commit in one write transaction. That
 * makes group commit and map growth simple: a batch that hits a full map is
 * aborted whole, the map grows, and the same batch is applied again.
 *
 * Threads: one thread may commit while another reads (the environment is
 * opened with MDB_NOTLS). A rec_rtxn belongs to the thread that began it.
 */
#ifndef REC_STORE_H
#define REC_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h" /* REC_BATCH_SILENT */

#define REC_SCHEMA_VERSION 1u

typedef enum rec_dbi {
    REC_DB_META,      /* string -> bytes: schema version, spaces, next ids */
    REC_DB_ITEM_IDS,  /* external id -> u32 index (big-endian); no longer
                         written (the map is rebuilt from ITEM_KEYS at
                         open), rows of older folders go with their id */
    REC_DB_ITEM_KEYS, /* u32 index -> external id */
    REC_DB_USER_IDS,
    REC_DB_USER_KEYS,
    REC_DB_ITEMS,     /* u32 index -> item record (flags + msgpack props) */
    REC_DB_USERS,     /* u32 index -> user record */
    REC_DB_VECTORS,   /* (space u16, kind u8, index u32) -> float32[d] LE */
    REC_DB_EVENTS,    /* u64 sequence -> event record (append-only log) */
    REC_DB_COUNTERS,  /* (family u16, index u32) -> decayed counter */
    REC_DB_KV,        /* free-form keys kept by policies */
    REC_DB_RECS,      /* rec_id -> what was shown (attribution) */
    REC_DB_MODELS,    /* (model u8, bucket u32) -> a click model's row */
    REC_DB__COUNT
} rec_dbi;

/* Name of a database inside the LMDB environment ("items", ...). */
const char *rec_store_db_name(rec_dbi db);

typedef struct rec_store_opts {
    size_t map_size; /* initial map size in bytes; default 64 MiB */
    size_t map_max;  /* the map grows up to this; default 16 GiB */
    int read_only;   /* open without writing; works beside a writer process */
    int no_sync;     /* skip fsync on commit: fast, NOT durable (tests, bulk) */
} rec_store_opts;

void rec_store_opts_default(rec_store_opts *o);

typedef struct rec_store rec_store;

/* Open (creating the folder and databases when missing, unless read_only)
 * the store in `dir`. Checks the schema version: a folder written by a newer
 * schema is refused with REC_ESCHEMA. A writable open takes the folder's
 * writer lock (<dir>/recd.lock) until rec_store_free: a second writable
 * open, in this process or another, is REC_EBUSY with the holder's pid in
 * the message; read-only opens take no lock. On failure *out is NULL and, when
 * errbuf is not NULL, a message naming the cause is written into it. */
int rec_store_open(rec_store **out, const char *dir, const rec_store_opts *o,
                   char *errbuf, size_t errlen);

/* Close the environment. NULL is a no-op. No rtxn may be open. */
void rec_store_free(rec_store *s);

/* Detail of the last error this store returned (static storage inside s,
 * valid until the next call on s). Empty when none. */
const char *rec_store_errmsg(const rec_store *s);

int rec_store_read_only(const rec_store *s);

/* A borrowed view of bytes owned by LMDB. */
typedef struct rec_val {
    const void *data;
    size_t len;
} rec_val;

/* Read transactions. Views returned through one are valid until
 * rec_store_read_end. Keep them short: a long reader pins old pages. */
typedef struct rec_rtxn rec_rtxn;
int rec_store_read_begin(rec_store *s, rec_rtxn **out);
void rec_store_read_end(rec_rtxn *t); /* NULL is a no-op */

/* REC_ENOTFOUND when absent; out borrowed until read_end. */
int rec_rtxn_get(rec_rtxn *t, rec_dbi db, const void *k, size_t kl,
                 rec_val *out);

/* Callback of a scan: return 0 to go on, a positive value to stop (the scan
 * returns 0), a negative error to stop and have the scan return it. Views
 * are borrowed for the duration of the callback only. */
typedef int (*rec_scan_cb)(void *ud, rec_val key, rec_val val);

/* Visit every key starting with prefix (plen 0: all keys) in key order, or
 * in reverse order when `reverse` is set. */
int rec_rtxn_scan(rec_rtxn *t, rec_dbi db, const void *prefix, size_t plen,
                  int reverse, rec_scan_cb cb, void *ud);

/* Visit every key from `from` (inclusive) to the last, in key order; the
 * callback's answer as for rec_rtxn_scan. */
int rec_rtxn_scan_from(rec_rtxn *t, rec_dbi db, const void *from, size_t flen,
                       rec_scan_cb cb, void *ud);

/* Entries in a database. */
int rec_rtxn_count(rec_rtxn *t, rec_dbi db, size_t *out);

/* Convenience: get a copy of one value in its own read transaction. */
int rec_store_get(rec_store *s, rec_dbi db, const void *k, size_t kl,
                  rec_buf *out);

/* A list of write operations, applied in order by rec_store_commit. The
 * batch copies keys and values; it is not tied to a store or a thread. */
typedef struct rec_batch rec_batch;
rec_batch *rec_batch_new(void);
void rec_batch_free(rec_batch *b); /* NULL is a no-op */
void rec_batch_clear(rec_batch *b);
size_t rec_batch_count(const rec_batch *b); /* operations held */
size_t rec_batch_bytes(const rec_batch *b); /* key+value bytes held */

/* Each returns 0 or REC_ENOMEM / REC_ETOOLARGE (key longer than
 * rec_store_max_key()), leaving the batch as it was on error. */
int rec_batch_put(rec_batch *b, rec_dbi db, const void *k, size_t kl,
                  const void *v, size_t vl);
/* Put a key known to sort after every key of db (MDB_APPEND: no page split
 * search). Falls back to an ordinary put when it does not. */
int rec_batch_append(rec_batch *b, rec_dbi db, const void *k, size_t kl,
                     const void *v, size_t vl);
/* rec_batch_append for a log that is written, never read back before its
 * commit: the record is not indexed, so rec_batch_find does not see it
 * (it saves the index's hashing and probing on the hottest write). */
int rec_batch_log(rec_batch *b, rec_dbi db, const void *k, size_t kl,
                  const void *v, size_t vl);
/* Delete one key; a missing key is not an error. */
int rec_batch_del(rec_batch *b, rec_dbi db, const void *k, size_t kl);
/* rec_batch_put and rec_batch_del for state that memory holds and nothing
 * reads back from the batch (vectors, counters): not indexed, so
 * rec_batch_find does not see them (a checkpoint stages hundreds of
 * thousands of such rows; the index would double its cost). A key of a db
 * may not be written both ways in one batch. */
int rec_batch_put_unread(rec_batch *b, rec_dbi db, const void *k, size_t kl,
                         const void *v, size_t vl);
int rec_batch_del_unread(rec_batch *b, rec_dbi db, const void *k, size_t kl);
/* Delete every key that starts with prefix (plen 0: empty the database). */
int rec_batch_del_prefix(rec_batch *b, rec_dbi db, const void *prefix,
                         size_t plen);

/* What the batch says of one key, looking at its operations from the last:
 * 0 with *out viewing the value of the latest put (borrowed until the batch
 * changes), REC_ENOTFOUND when a del or del_prefix removed it, or
 * REC_BATCH_SILENT (positive, err.h) when no operation touches it. O(ops). */
int rec_batch_find(const rec_batch *b, rec_dbi db, const void *k, size_t kl,
                   rec_val *out);

/* Largest key LMDB accepts (511 with default builds). */
size_t rec_store_max_key(void);

/* Apply the batch in one write transaction, durable on return unless
 * no_sync. When the map is full it grows (doubling, up to map_max) and the
 * batch is applied again; past map_max returns REC_EFULL with nothing of the
 * batch written. REC_ENOSPACE when the disk is full, REC_EREADONLY on a
 * read-only store. The batch is left as it was (the caller clears it). No
 * rtxn of this store may be open in the calling thread during a map resize:
 * commit ends the store's cached reader itself. */
int rec_store_commit(rec_store *s, rec_batch *b);

#ifdef REC_FAULTS
/* Test builds only (compiled with -DREC_FAULTS): make chosen commits fail.
 * spec is "N[,N...][:CODE]" (the N-th rec_store_commit calls that carry
 * writes, counted from 1 over the whole process, fail) or "every=K[:CODE]"
 * (every K-th fails); CODE is eio (REC_EIO, the default), enospc
 * (REC_ENOSPACE) or mapfull (REC_EFULL). A failing commit writes nothing.
 * Setting a plan restarts the count; NULL or "" clears it. REC_EINVAL on a
 * malformed spec (the plan in force is kept). The first rec_store_open of
 * the process sets the plan from the environment variable
 * RECD_FAULT_COMMIT, and fails with REC_EINVAL when it is malformed. */
int rec_store_fault_set(const char *spec);
#endif

typedef struct rec_store_stats {
    size_t map_size;   /* current map size, bytes */
    size_t map_max;
    size_t used_bytes; /* pages in use * page size */
    size_t entries[REC_DB__COUNT];
    uint64_t commits;
    uint64_t map_grows;
} rec_store_stats;

int rec_store_stats_get(rec_store *s, rec_store_stats *out);

#endif
