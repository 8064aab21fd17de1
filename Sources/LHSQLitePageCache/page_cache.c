// A wrapper around SQLite's default page cache (pcache1) that keeps a commit
// from walking the whole cache.
//
// At the end of every write transaction SQLite calls the page cache's
// xTruncate(dbSize + 1) to drop pages beyond the end of the database. The
// default cache keeps the highest key it has held (iMaxKey) and walks only
// when the limit is below it, but when B-tree balancing reorders sibling
// pages it renumbers one of them through a temporary key, the page after the
// pending byte (PENDING_BYTE / pageSize + 1: 262145 with 4 KiB pages), and
// back. iMaxKey then stays at 262145, far beyond dbSize, and the next
// xTruncate visits every bucket of the hash table and every cached page:
// with lh-server's 32 MB writer cache, on most commits (a WfRun row is about
// half a page, so most commits split one), 5-6 % of the server's CPU at half
// load and growing with the cache (docs/performance.md, tenth round).
//
// The wrapper keeps its own bound of the highest live key, not counting that
// temporary key while it is renumbered away again, and passes xTruncate on
// only when some cached page may be at or beyond the limit. A skipped call
// would have dropped nothing; everything else goes to the default cache
// unchanged. When unsure (a key it did not see renumbered away) it passes
// the call on, so the worst case is the default cache's own cost.
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "lh_page_cache.h"

#define LH_PENDING_BYTE 0x40000000u

static sqlite3_pcache_methods2 inner_methods;
static int installed = 0;
static _Atomic uint64_t skipped_count = 0;
static _Atomic uint64_t passed_count = 0;

typedef struct {
    sqlite3_pcache *inner;
    unsigned int temporary_key;  // the key balancing renumbers through
    unsigned int max_key;        // >= every live key other than temporary_key
    unsigned int renumbered;     // pages renumbered to temporary_key and not yet away
    int temporary_fetched;       // temporary_key was fetched: may be live until a truncate drops it
} wrapped_cache;

static int wrapped_init(void *arg) {
    (void)arg;
    return inner_methods.xInit ? inner_methods.xInit(inner_methods.pArg) : SQLITE_OK;
}

static void wrapped_shutdown(void *arg) {
    (void)arg;
    if (inner_methods.xShutdown) inner_methods.xShutdown(inner_methods.pArg);
}

static sqlite3_pcache *wrapped_create(int page_size, int extra_size, int purgeable) {
    wrapped_cache *cache = calloc(1, sizeof(wrapped_cache));
    if (cache == NULL) return NULL;
    cache->inner = inner_methods.xCreate(page_size, extra_size, purgeable);
    if (cache->inner == NULL) {
        free(cache);
        return NULL;
    }
    cache->temporary_key = page_size > 0 ? LH_PENDING_BYTE / (unsigned int)page_size + 1 : 0;
    return (sqlite3_pcache *)cache;
}

static void wrapped_cachesize(sqlite3_pcache *p, int size) {
    wrapped_cache *cache = (wrapped_cache *)p;
    inner_methods.xCachesize(cache->inner, size);
}

static int wrapped_pagecount(sqlite3_pcache *p) {
    wrapped_cache *cache = (wrapped_cache *)p;
    return inner_methods.xPagecount(cache->inner);
}

static sqlite3_pcache_page *wrapped_fetch(sqlite3_pcache *p, unsigned int key, int create) {
    wrapped_cache *cache = (wrapped_cache *)p;
    sqlite3_pcache_page *page = inner_methods.xFetch(cache->inner, key, create);
    if (page != NULL) {
        if (key == cache->temporary_key) cache->temporary_fetched = 1;
        else if (key > cache->max_key) cache->max_key = key;
    }
    return page;
}

static void wrapped_unpin(sqlite3_pcache *p, sqlite3_pcache_page *page, int discard) {
    wrapped_cache *cache = (wrapped_cache *)p;
    inner_methods.xUnpin(cache->inner, page, discard);
}

static void wrapped_rekey(sqlite3_pcache *p, sqlite3_pcache_page *page, unsigned int old_key, unsigned int new_key) {
    wrapped_cache *cache = (wrapped_cache *)p;
    inner_methods.xRekey(cache->inner, page, old_key, new_key);
    if (new_key == old_key) return;
    if (new_key == cache->temporary_key) cache->renumbered += 1;
    else if (new_key > cache->max_key) cache->max_key = new_key;
    if (old_key == cache->temporary_key && cache->renumbered > 0) cache->renumbered -= 1;
}

static void wrapped_truncate(sqlite3_pcache *p, unsigned int limit) {
    wrapped_cache *cache = (wrapped_cache *)p;
    int temporary_live = cache->renumbered > 0 || cache->temporary_fetched;
    int temporary_at_or_beyond = temporary_live && cache->temporary_key >= limit;
    if (limit > cache->max_key && !temporary_at_or_beyond) {
        // No cached page has a key >= limit: the default cache would drop nothing.
        atomic_fetch_add_explicit(&skipped_count, 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&passed_count, 1, memory_order_relaxed);
    inner_methods.xTruncate(cache->inner, limit);
    if (limit > 0 && cache->max_key >= limit) cache->max_key = limit - 1;
    if (temporary_at_or_beyond) {
        cache->renumbered = 0;
        cache->temporary_fetched = 0;
    }
}

static void wrapped_destroy(sqlite3_pcache *p) {
    wrapped_cache *cache = (wrapped_cache *)p;
    inner_methods.xDestroy(cache->inner);
    free(cache);
}

static void wrapped_shrink(sqlite3_pcache *p) {
    wrapped_cache *cache = (wrapped_cache *)p;
    inner_methods.xShrink(cache->inner);
}

int lh_page_cache_install(void) {
    if (installed) return SQLITE_OK;
    int rc = sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &inner_methods);
    if (rc != SQLITE_OK) return rc;
    if (inner_methods.iVersion < 1 || inner_methods.xCreate == NULL) return SQLITE_ERROR;
    static sqlite3_pcache_methods2 methods;
    methods.iVersion = 1;
    methods.pArg = NULL;
    methods.xInit = wrapped_init;
    methods.xShutdown = wrapped_shutdown;
    methods.xCreate = wrapped_create;
    methods.xCachesize = wrapped_cachesize;
    methods.xPagecount = wrapped_pagecount;
    methods.xFetch = wrapped_fetch;
    methods.xUnpin = wrapped_unpin;
    methods.xRekey = wrapped_rekey;
    methods.xTruncate = wrapped_truncate;
    methods.xDestroy = wrapped_destroy;
    methods.xShrink = wrapped_shrink;
    rc = sqlite3_config(SQLITE_CONFIG_PCACHE2, &methods);
    if (rc == SQLITE_OK) installed = 1;
    return rc;
}

int lh_page_cache_installed(void) { return installed; }

void lh_page_cache_counts(uint64_t *skipped, uint64_t *passed) {
    if (skipped) *skipped = atomic_load_explicit(&skipped_count, memory_order_relaxed);
    if (passed) *passed = atomic_load_explicit(&passed_count, memory_order_relaxed);
}

// Installed as the process loads, before any SQLite connection can exist
// (sqlite3_config refuses once SQLite is initialized); SQLiteStore asks again
// before it opens its database, which is then a no-op.
__attribute__((constructor)) static void lh_page_cache_install_at_load(void) {
    (void)lh_page_cache_install();
}
