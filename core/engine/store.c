/* store.c - LMDB storage: one environment, its named databases, read
 * transactions and replayable write batches.
 *
 * Map size. LMDB maps the whole data file at a fixed size chosen up front.
 * We start small (map_size) and double on MDB_MAP_FULL up to map_max: the
 * write transaction is aborted, the map is remapped bigger and the batch is
 * replayed from the start, so a batch is either all written or not at all.
 * Another process may grow the map too; LMDB then refuses to begin a
 * transaction with MDB_MAP_RESIZED and we adopt the size it recorded.
 *
 * Threads. The environment is opened with MDB_NOTLS, so a read transaction
 * is not tied to a thread's reader slot and one thread may commit while
 * others read. Remapping (mdb_env_set_mapsize) unmaps the file under every
 * live LMDB view of this process, so it must never run while a read or a
 * write is in flight: each open rec_rtxn holds map_lock shared, each write
 * txn runs under write_mu, and a remap takes map_lock exclusive and then
 * write_mu. A thread may commit while holding an rtxn, but if that commit
 * needs a remap it fails with REC_EBUSY (it would wait for itself).
 *
 * Batches are one growable buffer of records (header, key, value), so an
 * append costs one memcpy amortised and a batch a handful of reallocs.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "err.h"
#include "hash.h"

/* MDB_MAXKEYSIZE of a default liblmdb build; mdb_env_get_maxkeysize says
 * the same at run time, but batches are built without an environment. */
#define MAX_KEY 511
#define MIB ((size_t)1 << 20)
#define DEFAULT_MAP_SIZE (64 * MIB)
#if SIZE_MAX > 0xffffffffu
#define DEFAULT_MAP_MAX ((size_t)16 << 30)
#else
#define DEFAULT_MAP_MAX ((size_t)1 << 30)
#endif
/* Retries of a transaction begin answered by MDB_MAP_RESIZED. One is
 * normally enough; more covers a writer process growing it again. */
#define RESIZE_TRIES 8
/* A cleared batch keeps its buffer for reuse unless it grew past this. */
#define BATCH_KEEP (16 * MIB)

static const char *const db_names[REC_DB__COUNT] = {
    [REC_DB_META] = "meta",           [REC_DB_ITEM_IDS] = "item_ids",
    [REC_DB_ITEM_KEYS] = "item_keys", [REC_DB_USER_IDS] = "user_ids",
    [REC_DB_USER_KEYS] = "user_keys", [REC_DB_ITEMS] = "items",
    [REC_DB_USERS] = "users",         [REC_DB_VECTORS] = "vectors",
    [REC_DB_EVENTS] = "events",       [REC_DB_COUNTERS] = "counters",
    [REC_DB_KV] = "kv",
    [REC_DB_RECS] = "recs",           [REC_DB_MODELS] = "models",
};

static const char schema_key[] = "schema_version";

struct rec_rtxn {
    rec_store *s;
    MDB_txn *txn; /* read-only; reset (not freed) when parked in s->idle */
};

struct rec_store {
    MDB_env *env;
    MDB_dbi dbi[REC_DB__COUNT];
    char *dir;
    size_t map_max;            /* page-aligned ceiling of the map */
    int read_only;
    int lock_fd;               /* <dir>/recd.lock, flock'ed by a writer; -1 */
    int locks_ready;           /* write_mu and map_lock initialised */
    pthread_mutex_t write_mu;  /* held by each write txn and by a remap */
    pthread_rwlock_t map_lock; /* shared per open rtxn; exclusive to remap,
                                  which then takes write_mu */
    _Atomic(rec_rtxn *) idle;  /* one reset read txn kept for reuse */
    _Atomic uint64_t commits;
    _Atomic uint64_t map_grows;
    /* Last error detail. Shared by every thread using s: a message written
     * by one thread may be overwritten by another's failure. */
    char errmsg[512];
};

/* Read transactions open in this thread, over all stores: a thread holding
 * one cannot wait for map_lock exclusively without deadlocking itself.
 * Counting across stores is conservative: an rtxn on one store also makes
 * a remap of another refuse (REC_EBUSY). */
static _Thread_local int thread_rtxns;

/* Operation records in a batch: op_hdr, then klen key bytes, then vlen
 * value bytes, unaligned (read back with memcpy). */
enum { OP_PUT = 1, OP_APPEND, OP_DEL, OP_DEL_PREFIX };

typedef struct op_hdr {
    uint32_t klen;
    uint32_t vlen;
    uint8_t kind; /* OP_* */
    uint8_t db;   /* rec_dbi */
} op_hdr;

struct rec_batch {
    rec_buf ops;  /* op records back to back */
    size_t count; /* records held */
    size_t bytes; /* key + value bytes held */
    /* Index for rec_batch_find: (db, key) -> offset + 1 of the latest op on
     * it, open addressing kept under half full. del_prefix ops are not
     * indexed; while a batch holds one, lookups scan the ops instead. */
    size_t *slots;
    size_t nslots, used;
    size_t prefix_ops;
};

/* ---- errors ---------------------------------------------------------- */

static int from_mdb(int rc) {
    switch (rc) {
    case MDB_SUCCESS:
        return 0;
    case MDB_NOTFOUND:
        return REC_ENOTFOUND;
    case MDB_KEYEXIST:
        return REC_EEXISTS;
    case MDB_MAP_FULL:
        return REC_EFULL;
    case MDB_BAD_VALSIZE:
    case MDB_TXN_FULL:
        return REC_ETOOLARGE;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
        return REC_ECORRUPT;
    case MDB_READERS_FULL:
    case EAGAIN:
    case EBUSY:
        return REC_EBUSY;
    case ENOMEM:
        return REC_ENOMEM;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return REC_ENOSPACE;
    case EACCES:
    case EPERM:
    case EROFS:
        return REC_EREADONLY;
    case EIO:
        return REC_EIO;
    case EINVAL:
        return REC_EINVAL;
    default:
        return REC_ESTORE;
    }
}

__attribute__((format(printf, 3, 4))) static int
fail(rec_store *s, int err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
    va_end(ap);
    return err;
}

/* An LMDB failure: the REC code for rc, detail "<what> in <dir>: <lmdb>". */
static int fail_mdb(rec_store *s, int rc, const char *what) {
    return fail(s, from_mdb(rc), "%s in %s: %s", what, s->dir,
                mdb_strerror(rc));
}

/* LMDB reports a write that came up short as EIO, which is what a disk
 * that fills up in the middle of a commit gives: is the folder's disk out
 * of room for the batch (with a margin for pages LMDB rewrites)? */
static int disk_short(const rec_store *s, const rec_batch *b) {
    struct statvfs v;
    if (statvfs(s->dir, &v) != 0)
        return 0;
    unsigned long long avail = (unsigned long long)v.f_bavail * v.f_frsize;
    unsigned long long need = 2ull * rec_batch_bytes(b) + (1ull << 20);
    return avail < need;
}

static void fmt_size(char *out, size_t n, size_t bytes) {
    double b = (double)bytes;
    if (bytes >= ((size_t)1 << 30))
        snprintf(out, n, "%.1f GiB", b / 1073741824.0);
    else if (bytes >= MIB)
        snprintf(out, n, "%.1f MiB", b / 1048576.0);
    else
        snprintf(out, n, "%.1f KiB", b / 1024.0);
}

static int valid_db(rec_dbi db) { return (unsigned)db < REC_DB__COUNT; }

static MDB_val mval(const void *p, size_t n) {
    MDB_val v = {.mv_size = n, .mv_data = (void *)p};
    return v;
}

const char *rec_store_db_name(rec_dbi db) {
    return valid_db(db) ? db_names[db] : "unknown";
}

size_t rec_store_max_key(void) { return MAX_KEY; }

const char *rec_store_errmsg(const rec_store *s) {
    return s ? s->errmsg : "";
}

int rec_store_read_only(const rec_store *s) { return s->read_only; }

void rec_store_opts_default(rec_store_opts *o) {
    memset(o, 0, sizeof *o);
    o->map_size = DEFAULT_MAP_SIZE;
    o->map_max = DEFAULT_MAP_MAX;
}

/* ---- fault injection (test builds only) ----------------------------- */

#ifdef REC_FAULTS
/* Commits that fail on purpose, so tests can check what a failed commit
 * does to the layers above. The plan is per process, like the count of
 * commits it refers to: the ordinal of a rec_store_commit call that
 * carries writes (an empty batch is not counted), over every store. */
#define FAULT_MAX_AT 256
static struct {
    pthread_mutex_t mu;
    uint64_t at[FAULT_MAX_AT]; /* ordinals that fail, 1-based */
    size_t nat;
    uint64_t every;            /* every K-th fails; 0: none */
    int code;                  /* REC_EIO, REC_ENOSPACE or REC_EFULL */
    uint64_t count;            /* commits with writes seen so far */
} faults = {.mu = PTHREAD_MUTEX_INITIALIZER, .code = REC_EIO};
static pthread_once_t faults_env_once = PTHREAD_ONCE_INIT;
static int faults_env_rc;

static int fault_parse_u64(const char **p, uint64_t *out) {
    const char *s = *p;
    uint64_t v = 0;
    if (*s < '1' || *s > '9')
        return REC_EINVAL;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (v > (UINT64_MAX - 9) / 10)
            return REC_EINVAL;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *p = s;
    *out = v;
    return 0;
}

int rec_store_fault_set(const char *spec) {
    uint64_t at[FAULT_MAX_AT], every = 0;
    size_t nat = 0;
    int code = REC_EIO;
    const char *p = spec ? spec : "";
    if (*p) {
        if (strncmp(p, "every=", 6) == 0) {
            p += 6;
            if (fault_parse_u64(&p, &every))
                return REC_EINVAL;
        } else {
            for (;;) {
                if (nat == FAULT_MAX_AT || fault_parse_u64(&p, &at[nat++]))
                    return REC_EINVAL;
                if (*p != ',')
                    break;
                p++;
            }
        }
        if (*p == ':') {
            p++;
            if (strcmp(p, "eio") == 0)
                code = REC_EIO;
            else if (strcmp(p, "enospc") == 0)
                code = REC_ENOSPACE;
            else if (strcmp(p, "mapfull") == 0)
                code = REC_EFULL;
            else
                return REC_EINVAL;
            p += strlen(p);
        }
        if (*p)
            return REC_EINVAL;
    }
    pthread_mutex_lock(&faults.mu);
    memcpy(faults.at, at, nat * sizeof *at);
    faults.nat = nat;
    faults.every = every;
    faults.code = code;
    faults.count = 0;
    pthread_mutex_unlock(&faults.mu);
    return 0;
}

static void faults_from_env(void) {
    const char *spec = getenv("RECD_FAULT_COMMIT");
    if (spec)
        faults_env_rc = rec_store_fault_set(spec);
}

/* Count one commit with writes; the error it must fail with, or 0. */
static int fault_next(uint64_t *ordinal) {
    pthread_mutex_lock(&faults.mu);
    uint64_t n = ++faults.count;
    int hit = faults.every && n % faults.every == 0;
    for (size_t i = 0; i < faults.nat && !hit; i++)
        hit = faults.at[i] == n;
    int code = faults.code;
    pthread_mutex_unlock(&faults.mu);
    *ordinal = n;
    return hit ? code : 0;
}

/* The failure the real cause would give, marked as injected. */
static int fault_fail(rec_store *s, int code, uint64_t ordinal) {
    const char *why = code == REC_ENOSPACE ? "the disk is full"
                      : code == REC_EFULL  ? "map full at map_max"
                                           : mdb_strerror(EIO);
    return fail(s, code, "cannot commit in %s: %s (injected: commit %llu, "
                "RECD_FAULT_COMMIT)", s->dir, why, (unsigned long long)ordinal);
}
#endif

/* ---- remapping ------------------------------------------------------- */

static void drop_idle(rec_store *s) {
    rec_rtxn *t = atomic_exchange(&s->idle, NULL);
    if (t) {
        mdb_txn_abort(t->txn);
        free(t);
    }
}

static size_t map_size_now(rec_store *s) {
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    return info.me_mapsize;
}

/* mkdir -p with mode 0700 for every folder it creates. 0 or -1 (errno). */
static int mkdir_p(const char *dir) {
    size_t n = strlen(dir);
    char *p = malloc(n + 1);
    if (!p) {
        errno = ENOMEM;
        return -1;
    }
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != 0)
            continue;
        char c = p[i];
        p[i] = 0;
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            errno = e;
            return -1;
        }
        p[i] = c;
    }
    free(p);
    return 0;
}

/* Remap the file. seen != 0: a commit hit MDB_MAP_FULL with a map of
 * `seen` bytes; double it (capped at map_max) unless another thread already
 * did. seen == 0: adopt the size the data file records, after another
 * process grew it. munmap+mmap invalidates every LMDB view, so this waits
 * for every rtxn of s to end (map_lock exclusive) and for any write txn
 * (write_mu). Lock order is map_lock then write_mu, here and in a thread
 * that commits while holding an rtxn. Caller holds neither. */
static int remap(rec_store *s, size_t seen) {
    if (thread_rtxns > 0)
        return fail(s, REC_EBUSY,
                    "the map of %s must be resized but this thread holds a "
                    "read transaction; end it and retry",
                    s->dir);
    pthread_rwlock_wrlock(&s->map_lock);
    pthread_mutex_lock(&s->write_mu);
    int rc = 0;
    size_t cur = map_size_now(s);
    if (!seen || cur == seen) {
        size_t next = 0;
        if (seen)
            next = cur > s->map_max / 2 ? s->map_max : cur * 2;
        drop_idle(s);
        rc = mdb_env_set_mapsize(s->env, next);
        if (!rc && seen)
            s->map_grows++;
    }
    pthread_mutex_unlock(&s->write_mu);
    pthread_rwlock_unlock(&s->map_lock);
    return rc ? fail_mdb(s, rc, "cannot resize the map") : 0;
}

/* ---- open / close ---------------------------------------------------- */

static int prepare_dir(rec_store *s) {
    struct stat st;
    if (stat(s->dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return fail(s, REC_EINVAL, "data folder %s is not a folder",
                        s->dir);
    } else if (errno != ENOENT) {
        return fail(s, REC_EIO, "cannot reach data folder %s: %s", s->dir,
                    strerror(errno));
    } else if (s->read_only) {
        return fail(s, REC_ENOTFOUND,
                    "data folder %s does not exist (a read-only open does "
                    "not create it)",
                    s->dir);
    } else if (mkdir_p(s->dir) != 0) {
        return fail(s, errno == EROFS ? REC_EREADONLY : REC_EIO,
                    "cannot create data folder %s: %s", s->dir,
                    strerror(errno));
    }
    if (s->read_only) {
        /* Checked here: LMDB would create lock.mdb before noticing. */
        size_t n = strlen(s->dir) + sizeof "/data.mdb";
        char *path = malloc(n);
        if (!path)
            return fail(s, REC_ENOMEM, "out of memory");
        snprintf(path, n, "%s/data.mdb", s->dir);
        int missing = stat(path, &st) != 0 && errno == ENOENT;
        free(path);
        if (missing)
            return fail(s, REC_ENOTFOUND,
                        "data folder %s holds no store (no data.mdb); open "
                        "it read-write once to create it",
                        s->dir);
    }
    return 0;
}

static int open_error(rec_store *s, int rc) {
    switch (rc) {
    case EACCES:
    case EPERM:
        return fail(s, REC_EIO,
                    "cannot open data folder %s: permission denied (LMDB "
                    "needs to write lock.mdb even to read)",
                    s->dir);
    case EROFS:
        return fail(s, REC_EREADONLY,
                    "data folder %s is on a read-only file system; open it "
                    "read_only",
                    s->dir);
    case MDB_INVALID:
        return fail(s, REC_ECORRUPT,
                    "data folder %s does not hold an LMDB environment "
                    "(data.mdb: %s)",
                    s->dir, mdb_strerror(rc));
    case MDB_VERSION_MISMATCH:
        return fail(s, REC_ESTORE,
                    "data folder %s was written by an incompatible LMDB "
                    "(%s)",
                    s->dir, mdb_strerror(rc));
    default:
        return fail(s, from_mdb(rc), "cannot open data folder %s: %s",
                    s->dir, mdb_strerror(rc));
    }
}

static int check_schema(rec_store *s, MDB_txn *txn) {
    MDB_dbi meta = s->dbi[REC_DB_META];
    MDB_val k = mval(schema_key, sizeof schema_key - 1), v;
    int rc = mdb_get(txn, meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        MDB_stat st;
        rc = mdb_stat(txn, meta, &st);
        if (rc)
            return fail_mdb(s, rc, "cannot read the meta database");
        if (s->read_only || st.ms_entries > 0)
            return fail(s, REC_ECORRUPT,
                        "data folder %s has no schema version: not a recd "
                        "store%s",
                        s->dir,
                        st.ms_entries ? "" : " (or never opened read-write)");
        unsigned char be[4];
        rec_be32(be, REC_SCHEMA_VERSION);
        MDB_val nv = mval(be, sizeof be);
        rc = mdb_put(txn, meta, &k, &nv, 0);
        return rc ? fail_mdb(s, rc, "cannot write the schema version") : 0;
    }
    if (rc)
        return fail_mdb(s, rc, "cannot read the schema version");
    if (v.mv_size != 4)
        return fail(s, REC_ECORRUPT,
                    "data folder %s: schema_version holds %zu bytes, "
                    "expected 4",
                    s->dir, v.mv_size);
    uint32_t ver = rec_get_be32(v.mv_data);
    if (ver > REC_SCHEMA_VERSION)
        return fail(s, REC_ESCHEMA,
                    "data folder %s was written by schema %u; this recd "
                    "reads schema %u or older",
                    s->dir, (unsigned)ver, (unsigned)REC_SCHEMA_VERSION);
    return 0;
}

static int init_dbs(rec_store *s, MDB_txn *txn) {
    unsigned flags = s->read_only ? 0 : MDB_CREATE;
    for (int i = 0; i < REC_DB__COUNT; i++) {
        int rc = mdb_dbi_open(txn, db_names[i], flags, &s->dbi[i]);
        if (rc == MDB_NOTFOUND)
            return fail(s, REC_ENOTFOUND,
                        "data folder %s has no '%s' database: not a recd "
                        "store, or never opened read-write",
                        s->dir, db_names[i]);
        if (rc == MDB_INCOMPATIBLE)
            return fail(s, REC_ECORRUPT,
                        "data folder %s: '%s' is not a database: not a "
                        "recd store",
                        s->dir, db_names[i]);
        if (rc)
            return fail_mdb(s, rc, "cannot open a database");
    }
    return check_schema(s, txn);
}

/* Open the databases and check (or, on a new store, write) the schema, in
 * one transaction committed so the dbi handles outlive it. */
static int open_dbs(rec_store *s) {
    for (int tries = 0;; tries++) {
        MDB_txn *txn;
        int rc =
            mdb_txn_begin(s->env, NULL, s->read_only ? MDB_RDONLY : 0, &txn);
        if (rc == MDB_MAP_RESIZED && tries < RESIZE_TRIES) {
            rc = mdb_env_set_mapsize(s->env, 0); /* no other thread yet */
            if (rc)
                return fail_mdb(s, rc, "cannot resize the map");
            continue;
        }
        if (rc)
            return fail_mdb(s, rc, "cannot begin the opening transaction");
        rc = init_dbs(s, txn);
        if (rc) {
            mdb_txn_abort(txn);
            return rc;
        }
        rc = mdb_txn_commit(txn);
        return rc ? fail_mdb(s, rc, "cannot commit the opening transaction")
                  : 0;
    }
}

/* One writer per folder: an exclusive flock on <dir>/recd.lock, held until
 * rec_store_free (the kernel drops it when the process dies, kill -9
 * included, so a crash leaves no stale lock). The file holds the pid of
 * its holder, for the error a second writer gets. The file itself stays:
 * removing it would let two writers lock two different files. Read-only
 * opens take no lock: LMDB lets them read beside the writer. */
static int take_writer_lock(rec_store *s) {
    size_t n = strlen(s->dir) + sizeof "/recd.lock";
    char *path = malloc(n);
    if (!path)
        return fail(s, REC_ENOMEM, "out of memory");
    snprintf(path, n, "%s/recd.lock", s->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int err = errno;
        free(path);
        return fail(s, err == EROFS ? REC_EREADONLY : REC_EIO,
                    "cannot open the lock file of %s: %s", s->dir, strerror(err));
    }
    free(path);
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char pid[32] = "";
        ssize_t got = pread(fd, pid, sizeof pid - 1, 0);
        close(fd);
        if (err != EWOULDBLOCK)
            return fail(s, REC_EIO, "cannot lock data folder %s: %s", s->dir,
                        strerror(err));
        pid[got > 0 ? got : 0] = '\0';
        long holder = strtol(pid, NULL, 10);
        if (holder > 0)
            return fail(s, REC_EBUSY,
                        "data folder %s is in use by process %ld (one writer per "
                        "folder; a read-only open works beside it)",
                        s->dir, holder);
        return fail(s, REC_EBUSY,
                    "data folder %s is in use by another process (one writer per "
                    "folder; a read-only open works beside it)",
                    s->dir);
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        /* the lock holds without the pid; only the message loses it */
    }
    s->lock_fd = fd;
    return 0;
}

static int open_env(rec_store *s, const rec_store_opts *o) {
    long pg = sysconf(_SC_PAGESIZE);
    size_t psz = pg > 0 ? (size_t)pg : 4096;
    size_t map_size = o->map_size ? o->map_size : DEFAULT_MAP_SIZE;
    size_t map_max = o->map_max ? o->map_max : DEFAULT_MAP_MAX;
    map_size = (map_size + psz - 1) / psz * psz;
    map_max = map_max / psz * psz;
    s->map_max = map_max < map_size ? map_size : map_max;

    int rc = prepare_dir(s);
    if (rc)
        return rc;
    if (!s->read_only && (rc = take_writer_lock(s)))
        return rc;
    rc = mdb_env_create(&s->env);
    if (rc) {
        s->env = NULL;
        return fail_mdb(s, rc, "cannot create an LMDB environment");
    }
    rc = mdb_env_set_maxdbs(s->env, REC_DB__COUNT);
    /* An existing file: 0 takes the size it records, so a map grown
     * earlier (here or by another process) is not shrunk and grown again.
     * A new one starts at map_size (LMDB's own default is 1 MiB). */
    char *dpath = malloc(strlen(s->dir) + sizeof "/data.mdb");
    if (!dpath)
        return fail(s, REC_ENOMEM, "out of memory");
    sprintf(dpath, "%s/data.mdb", s->dir);
    struct stat dst;
    int fresh = stat(dpath, &dst) != 0;
    free(dpath);
    if (!rc)
        rc = mdb_env_set_mapsize(s->env, fresh && !s->read_only ? map_size : 0);
    if (rc)
        return fail_mdb(s, rc, "cannot configure the environment");

    unsigned flags = MDB_NOTLS;
    if (s->read_only)
        flags |= MDB_RDONLY;
    else if (o->no_sync)
        flags |= MDB_NOSYNC;
    rc = mdb_env_open(s->env, s->dir, flags, 0600);
    if (rc)
        return open_error(s, rc);

    if (!s->read_only && map_size_now(s) < map_size) {
        rc = mdb_env_set_mapsize(s->env, map_size);
        if (rc)
            return fail_mdb(s, rc, "cannot set the map size");
    }
    int dead;
    mdb_reader_check(s->env, &dead); /* free slots of crashed readers */
    return open_dbs(s);
}

int rec_store_open(rec_store **out, const char *dir, const rec_store_opts *o,
                   char *errbuf, size_t errlen) {
    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!out)
        return REC_EINVAL;
    *out = NULL;
    if (!dir || !*dir) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "no data folder given");
        return REC_EINVAL;
    }
#ifdef REC_FAULTS
    pthread_once(&faults_env_once, faults_from_env);
    if (faults_env_rc) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "RECD_FAULT_COMMIT must be N[,N...][:CODE] "
                     "or every=K[:CODE], CODE eio, enospc or mapfull");
        return faults_env_rc;
    }
#endif
    rec_store_opts def;
    if (!o) {
        rec_store_opts_default(&def);
        o = &def;
    }
    rec_store *s = calloc(1, sizeof *s);
    char *d = strdup(dir);
    if (!s || !d || pthread_mutex_init(&s->write_mu, NULL) != 0) {
        free(s);
        free(d);
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "out of memory opening %s", dir);
        return REC_ENOMEM;
    }
    if (pthread_rwlock_init(&s->map_lock, NULL) != 0) {
        pthread_mutex_destroy(&s->write_mu);
        free(s);
        free(d);
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "out of memory opening %s", dir);
        return REC_ENOMEM;
    }
    s->locks_ready = 1;
    s->dir = d;
    s->read_only = o->read_only != 0;
    s->lock_fd = -1;
    atomic_init(&s->idle, NULL);
    atomic_init(&s->commits, 0);
    atomic_init(&s->map_grows, 0);

    int rc = open_env(s, o);
    if (rc) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "%s", s->errmsg);
        rec_store_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void rec_store_free(rec_store *s) {
    if (!s)
        return;
    if (s->env) {
        drop_idle(s);
        mdb_env_close(s->env); /* also closes the dbi handles */
    }
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the writer lock */
    if (s->locks_ready) {
        pthread_rwlock_destroy(&s->map_lock);
        pthread_mutex_destroy(&s->write_mu);
    }
    free(s->dir);
    free(s);
}

/* ---- reads ----------------------------------------------------------- */

int rec_store_read_begin(rec_store *s, rec_rtxn **out) {
    *out = NULL;
    for (int tries = 0;; tries++) {
        pthread_rwlock_rdlock(&s->map_lock);
        rec_rtxn *t = atomic_exchange(&s->idle, NULL);
        int rc = 0;
        if (t && (rc = mdb_txn_renew(t->txn)) != 0) {
            mdb_txn_abort(t->txn);
            free(t);
            t = NULL;
        }
        if (!t) {
            t = malloc(sizeof *t);
            if (!t) {
                pthread_rwlock_unlock(&s->map_lock);
                return fail(s, REC_ENOMEM, "out of memory");
            }
            t->s = s;
            rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t->txn);
            if (rc)
                free(t);
        }
        if (!rc) {
            thread_rtxns++;
            *out = t;
            return 0;
        }
        pthread_rwlock_unlock(&s->map_lock);
        if (rc != MDB_MAP_RESIZED || tries >= RESIZE_TRIES)
            return fail_mdb(s, rc, "cannot begin a read transaction");
        rc = remap(s, 0); /* another process grew the map */
        if (rc)
            return rc;
    }
}

void rec_store_read_end(rec_rtxn *t) {
    if (!t)
        return;
    rec_store *s = t->s;
    /* Reset keeps the reader slot and the struct for the next begin;
     * only one is parked, extra ones are freed. */
    mdb_txn_reset(t->txn);
    rec_rtxn *none = NULL;
    if (!atomic_compare_exchange_strong(&s->idle, &none, t)) {
        mdb_txn_abort(t->txn);
        free(t);
    }
    thread_rtxns--;
    pthread_rwlock_unlock(&s->map_lock);
}

static int check_key(const void *k, size_t kl) {
    if (kl == 0 || !k)
        return REC_EINVAL;
    return kl > MAX_KEY ? REC_ETOOLARGE : 0;
}

int rec_rtxn_get(rec_rtxn *t, rec_dbi db, const void *k, size_t kl,
                 rec_val *out) {
    if (!valid_db(db))
        return REC_EINVAL;
    int rc = check_key(k, kl);
    if (rc)
        return rc;
    MDB_val key = mval(k, kl), v;
    rc = mdb_get(t->txn, t->s->dbi[db], &key, &v);
    if (rc == MDB_NOTFOUND)
        return REC_ENOTFOUND;
    if (rc)
        return fail_mdb(t->s, rc, "cannot read");
    out->data = v.mv_data;
    out->len = v.mv_size;
    return 0;
}

static int has_prefix(const MDB_val *k, const void *prefix, size_t plen) {
    return plen == 0 ||
           (k->mv_size >= plen && memcmp(k->mv_data, prefix, plen) == 0);
}

/* Put the cursor on the last key starting with prefix, or on the key just
 * before where such keys would be (the caller checks the prefix). Seeks to
 * the prefix's successor (trailing 0xFF bytes dropped, last byte + 1) and
 * steps back; a prefix of only 0xFF bytes has no successor: such keys sort
 * last. */
static int seek_last(MDB_cursor *c, const void *prefix, size_t plen,
                     MDB_val *k, MDB_val *v) {
    unsigned char succ[MAX_KEY];
    size_t n = plen;
    memcpy(succ, prefix, plen);
    while (n > 0 && succ[n - 1] == 0xFF)
        n--;
    if (n == 0)
        return mdb_cursor_get(c, k, v, MDB_LAST);
    succ[n - 1]++;
    *k = mval(succ, n);
    int rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND)
        return mdb_cursor_get(c, k, v, MDB_LAST);
    if (rc)
        return rc;
    return mdb_cursor_get(c, k, v, MDB_PREV);
}

int rec_rtxn_scan(rec_rtxn *t, rec_dbi db, const void *prefix, size_t plen,
                  int reverse, rec_scan_cb cb, void *ud) {
    if (!valid_db(db) || !cb || (plen && !prefix))
        return REC_EINVAL;
    if (plen > MAX_KEY)
        return 0; /* no stored key is that long */
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->txn, t->s->dbi[db], &c);
    if (rc)
        return fail_mdb(t->s, rc, "cannot open a cursor");
    MDB_val k, v;
    if (plen == 0) {
        rc = mdb_cursor_get(c, &k, &v, reverse ? MDB_LAST : MDB_FIRST);
    } else if (!reverse) {
        k = mval(prefix, plen);
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    } else {
        rc = seek_last(c, prefix, plen, &k, &v);
    }
    MDB_cursor_op step = reverse ? MDB_PREV : MDB_NEXT;
    while (rc == 0 && has_prefix(&k, prefix, plen)) {
        rec_val key = {k.mv_data, k.mv_size};
        rec_val val = {v.mv_data, v.mv_size};
        int r = cb(ud, key, val);
        if (r) {
            mdb_cursor_close(c);
            return r > 0 ? 0 : r;
        }
        rc = mdb_cursor_get(c, &k, &v, step);
    }
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND)
        return fail_mdb(t->s, rc, "scan failed");
    return 0;
}

int rec_rtxn_scan_from(rec_rtxn *t, rec_dbi db, const void *from, size_t flen,
                       rec_scan_cb cb, void *ud) {
    if (!valid_db(db) || !cb || !from || flen == 0)
        return REC_EINVAL;
    if (flen > MAX_KEY)
        return REC_ETOOLARGE;
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->txn, t->s->dbi[db], &c);
    if (rc)
        return fail_mdb(t->s, rc, "cannot open a cursor");
    MDB_val k = mval(from, flen), v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        rec_val key = {k.mv_data, k.mv_size};
        rec_val val = {v.mv_data, v.mv_size};
        int r = cb(ud, key, val);
        if (r) {
            mdb_cursor_close(c);
            return r > 0 ? 0 : r;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (rc != MDB_NOTFOUND)
        return fail_mdb(t->s, rc, "scan failed");
    return 0;
}

int rec_rtxn_count(rec_rtxn *t, rec_dbi db, size_t *out) {
    if (!valid_db(db))
        return REC_EINVAL;
    MDB_stat st;
    int rc = mdb_stat(t->txn, t->s->dbi[db], &st);
    if (rc)
        return fail_mdb(t->s, rc, "cannot count entries");
    *out = st.ms_entries;
    return 0;
}

int rec_store_get(rec_store *s, rec_dbi db, const void *k, size_t kl,
                  rec_buf *out) {
    rec_rtxn *t;
    int rc = rec_store_read_begin(s, &t);
    if (rc)
        return rc;
    rec_val v;
    rc = rec_rtxn_get(t, db, k, kl, &v);
    if (!rc)
        rc = rec_buf_set(out, v.data, v.len);
    rec_store_read_end(t);
    return rc;
}

/* ---- batches --------------------------------------------------------- */

rec_batch *rec_batch_new(void) { return calloc(1, sizeof(rec_batch)); }

void rec_batch_free(rec_batch *b) {
    if (!b)
        return;
    rec_buf_free(&b->ops);
    free(b->slots);
    free(b);
}

void rec_batch_clear(rec_batch *b) {
    if (b->ops.cap > BATCH_KEEP)
        rec_buf_free(&b->ops);
    rec_buf_clear(&b->ops);
    b->count = 0;
    b->bytes = 0;
    if (b->nslots > 65536) {
        free(b->slots);
        b->slots = NULL;
        b->nslots = 0;
    } else if (b->slots) {
        memset(b->slots, 0, b->nslots * sizeof *b->slots);
    }
    b->used = 0;
    b->prefix_ops = 0;
}

/* Keys come from clients: the keyed hash (hash.h), the database added in
 * so that one key in two databases starts from two different slots. */
static uint64_t op_hash(uint8_t db, const void *k, size_t kl) {
    return rec_hash_keyed(k, kl) + db * 0x9e3779b97f4a7c15ull;
}

/* Slot of (db, key): the one holding it, or the empty one it would take. */
static size_t slot_find(const rec_batch *b, uint8_t db, const void *k, size_t kl) {
    size_t mask = b->nslots - 1;
    for (size_t i = op_hash(db, k, kl) & mask;; i = (i + 1) & mask) {
        size_t s = b->slots[i];
        if (!s)
            return i;
        op_hdr h;
        memcpy(&h, b->ops.data + s - 1, sizeof h);
        if (h.db == db && h.klen == kl &&
            memcmp(b->ops.data + s - 1 + sizeof h, k, kl) == 0)
            return i;
    }
}

static int index_grow(rec_batch *b) {
    size_t n = b->nslots ? b->nslots * 2 : 256;
    size_t *old = b->slots, oldn = b->nslots;
    b->slots = calloc(n, sizeof *b->slots);
    if (!b->slots) {
        b->slots = old;
        return REC_ENOMEM;
    }
    b->nslots = n;
    for (size_t i = 0; i < oldn; i++) {
        if (!old[i])
            continue;
        op_hdr h;
        memcpy(&h, b->ops.data + old[i] - 1, sizeof h);
        b->slots[slot_find(b, h.db, b->ops.data + old[i] - 1 + sizeof h, h.klen)] = old[i];
    }
    free(old);
    return 0;
}

/* Point the index at the op just appended at offset off. */
static int index_op(rec_batch *b, size_t off, uint8_t db, const void *k,
                    size_t kl) {
    if ((b->used + 1) * 2 > b->nslots) {
        int rc = index_grow(b);
        if (rc)
            return rc;
    }
    size_t i = slot_find(b, db, k, kl);
    if (!b->slots[i])
        b->used++;
    b->slots[i] = off + 1;
    return 0;
}

size_t rec_batch_count(const rec_batch *b) { return b->count; }
size_t rec_batch_bytes(const rec_batch *b) { return b->bytes; }

static int add_op(rec_batch *b, int kind, rec_dbi db, const void *k,
                  size_t kl, const void *v, size_t vl, int indexed) {
    if (!valid_db(db) || (kl && !k) || (vl && !v))
        return REC_EINVAL;
    if (kl > MAX_KEY || vl > UINT32_MAX)
        return REC_ETOOLARGE;
    if (kl == 0 && kind != OP_DEL_PREFIX)
        return REC_EINVAL;
    size_t need = sizeof(op_hdr) + kl + vl;
    int rc = rec_buf_reserve(&b->ops, need);
    if (rc)
        return rc;
    op_hdr h = {(uint32_t)kl, (uint32_t)vl, (uint8_t)kind, (uint8_t)db};
    char *p = b->ops.data + b->ops.len;
    memcpy(p, &h, sizeof h);
    if (kl)
        memcpy(p + sizeof h, k, kl);
    if (vl)
        memcpy(p + sizeof h + kl, v, vl);
    size_t off = b->ops.len;
    b->ops.len += need;
    if (kind == OP_DEL_PREFIX) {
        b->prefix_ops++;
    } else if (indexed && (rc = index_op(b, off, (uint8_t)db, k, kl))) {
        b->ops.len = off; /* as it was */
        return rc;
    }
    b->count++;
    b->bytes += kl + vl;
    return 0;
}

int rec_batch_put(rec_batch *b, rec_dbi db, const void *k, size_t kl,
                  const void *v, size_t vl) {
    return add_op(b, OP_PUT, db, k, kl, v, vl, 1);
}

int rec_batch_append(rec_batch *b, rec_dbi db, const void *k, size_t kl,
                     const void *v, size_t vl) {
    return add_op(b, OP_APPEND, db, k, kl, v, vl, 1);
}

int rec_batch_log(rec_batch *b, rec_dbi db, const void *k, size_t kl,
                  const void *v, size_t vl) {
    return add_op(b, OP_APPEND, db, k, kl, v, vl, 0);
}

int rec_batch_del(rec_batch *b, rec_dbi db, const void *k, size_t kl) {
    return add_op(b, OP_DEL, db, k, kl, NULL, 0, 1);
}

int rec_batch_put_unread(rec_batch *b, rec_dbi db, const void *k, size_t kl,
                         const void *v, size_t vl) {
    return add_op(b, OP_PUT, db, k, kl, v, vl, 0);
}

int rec_batch_del_unread(rec_batch *b, rec_dbi db, const void *k, size_t kl) {
    return add_op(b, OP_DEL, db, k, kl, NULL, 0, 0);
}

int rec_batch_del_prefix(rec_batch *b, rec_dbi db, const void *prefix,
                         size_t plen) {
    return add_op(b, OP_DEL_PREFIX, db, prefix, plen, NULL, 0, 1);
}

int rec_batch_find(const rec_batch *b, rec_dbi db, const void *k, size_t kl,
                   rec_val *out) {
    if (!b->prefix_ops) {
        /* O(1): the index holds the latest op on each key. */
        if (!b->nslots)
            return REC_BATCH_SILENT;
        size_t s = b->slots[slot_find(b, (uint8_t)db, k, kl)];
        if (!s)
            return REC_BATCH_SILENT;
        op_hdr h;
        memcpy(&h, b->ops.data + s - 1, sizeof h);
        if (h.kind == OP_DEL)
            return REC_ENOTFOUND;
        out->data = b->ops.data + s - 1 + sizeof h + h.klen;
        out->len = h.vlen;
        return 0;
    }
    /* A del_prefix is not indexed: walk the records, keeping the last word. */
    int verdict = REC_BATCH_SILENT;
    size_t off = 0;
    while (off < b->ops.len) {
        op_hdr h;
        const char *p = b->ops.data + off;
        memcpy(&h, p, sizeof h);
        const char *key = p + sizeof h;
        off += sizeof h + h.klen + h.vlen;
        if (h.db != (uint8_t)db)
            continue;
        if (h.kind == OP_DEL_PREFIX) {
            if (h.klen <= kl && memcmp(key, k, h.klen) == 0)
                verdict = REC_ENOTFOUND;
            continue;
        }
        if (h.klen != kl || memcmp(key, k, kl) != 0)
            continue;
        if (h.kind == OP_DEL) {
            verdict = REC_ENOTFOUND;
        } else {
            out->data = key + h.klen;
            out->len = h.vlen;
            verdict = 0;
        }
    }
    return verdict;
}

/* ---- commit ---------------------------------------------------------- */

static int del_prefix(MDB_txn *txn, MDB_dbi dbi, const MDB_val *prefix) {
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc)
        return rc;
    MDB_val k = *prefix, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && has_prefix(&k, prefix->mv_data, prefix->mv_size)) {
        rc = mdb_cursor_del(c, 0);
        /* After a delete the cursor already sits on the following key;
         * MDB_NEXT returns it without stepping further. */
        if (!rc)
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Replay every op of b in txn. Returns an LMDB code; *bad names the
 * database of the failing op. */
static int apply(rec_store *s, MDB_txn *txn, const rec_batch *b,
                 rec_dbi *bad) {
    size_t off = 0;
    while (off < b->ops.len) {
        op_hdr h;
        char *p = b->ops.data + off;
        memcpy(&h, p, sizeof h);
        MDB_val k = mval(p + sizeof h, h.klen);
        MDB_val v = mval(p + sizeof h + h.klen, h.vlen);
        MDB_dbi dbi = s->dbi[h.db];
        off += sizeof h + h.klen + h.vlen;
        int rc;
        switch (h.kind) {
        case OP_PUT:
            rc = mdb_put(txn, dbi, &k, &v, 0);
            break;
        case OP_APPEND:
            rc = mdb_put(txn, dbi, &k, &v, MDB_APPEND);
            if (rc == MDB_KEYEXIST) /* not after the last key */
                rc = mdb_put(txn, dbi, &k, &v, 0);
            break;
        case OP_DEL:
            rc = mdb_del(txn, dbi, &k, NULL);
            if (rc == MDB_NOTFOUND)
                rc = 0;
            break;
        default: /* OP_DEL_PREFIX */
            rc = h.klen ? del_prefix(txn, dbi, &k) : mdb_drop(txn, dbi, 0);
            break;
        }
        if (rc) {
            *bad = (rec_dbi)h.db;
            return rc;
        }
    }
    return 0;
}

/* try_commit's answer when the map must be remapped before a retry. */
#define REMAP_THEN_RETRY 1

/* One attempt at writing b, under write_mu. 0, a REC_E* code, or
 * REMAP_THEN_RETRY with *seen the map size to grow from (0: adopt the size
 * another process recorded). */
static int try_commit(rec_store *s, const rec_batch *b, size_t *seen) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc == MDB_MAP_RESIZED) {
        *seen = 0;
        return REMAP_THEN_RETRY;
    }
    if (rc)
        return fail_mdb(s, rc, "cannot begin a write transaction");
    rec_dbi bad = REC_DB_META;
    rc = apply(s, txn, b, &bad);
    if (rc) {
        mdb_txn_abort(txn);
        if (rc != MDB_MAP_FULL)
            return fail(s, from_mdb(rc), "writing to '%s' in %s: %s",
                        db_names[bad], s->dir, mdb_strerror(rc));
    } else {
        rc = mdb_txn_commit(txn); /* frees txn, even on failure */
        if (!rc) {
            s->commits++;
            return 0;
        }
        if (rc == EIO && disk_short(s, b))
            return fail(s, REC_ENOSPACE, "cannot commit in %s: the disk is full "
                        "(a write came up short)", s->dir);
        if (rc != MDB_MAP_FULL)
            return fail_mdb(s, rc, "cannot commit");
    }
    size_t cur = map_size_now(s);
    if (cur >= s->map_max) {
        char sz[32];
        fmt_size(sz, sizeof sz, cur);
        return fail(s, REC_EFULL,
                    "map full at %s (map_max); raise map_max (batch of %zu "
                    "operations, %zu bytes, not written to %s)",
                    sz, b->count, b->bytes, s->dir);
    }
    *seen = cur;
    return REMAP_THEN_RETRY;
}

int rec_store_commit(rec_store *s, rec_batch *b) {
    if (s->read_only)
        return fail(s, REC_EREADONLY,
                    "data folder %s is open read-only; commit refused",
                    s->dir);
    if (b->count == 0)
        return 0;
#ifdef REC_FAULTS
    uint64_t ordinal;
    int injected = fault_next(&ordinal);
    if (injected) /* as a transaction aborted before its commit */
        return fault_fail(s, injected, ordinal);
#endif
    /* Each MDB_MAP_FULL doubles the map (bounded by map_max), so this
     * ends; MDB_MAP_RESIZED retries are counted. */
    for (int adopted = 0;;) {
        size_t seen = 0;
        pthread_mutex_lock(&s->write_mu);
        int rc = try_commit(s, b, &seen);
        pthread_mutex_unlock(&s->write_mu);
        if (rc != REMAP_THEN_RETRY)
            return rc;
        if (!seen && ++adopted > RESIZE_TRIES)
            return fail(s, REC_EBUSY,
                        "the map of %s keeps being resized by another "
                        "process",
                        s->dir);
        rc = remap(s, seen);
        if (rc)
            return rc;
    }
}

/* ---- stats ----------------------------------------------------------- */

int rec_store_stats_get(rec_store *s, rec_store_stats *out) {
    memset(out, 0, sizeof *out);
    rec_rtxn *t;
    int rc = rec_store_read_begin(s, &t);
    if (rc)
        return rc;
    /* Inside the rtxn: no remap can change the environment meanwhile. */
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &st);
    out->map_size = info.me_mapsize;
    out->map_max = s->map_max;
    out->used_bytes = (info.me_last_pgno + 1) * st.ms_psize;
    for (int i = 0; i < REC_DB__COUNT && !rc; i++)
        rc = rec_rtxn_count(t, (rec_dbi)i, &out->entries[i]);
    rec_store_read_end(t);
    out->commits = s->commits;
    out->map_grows = s->map_grows;
    return rc;
}
