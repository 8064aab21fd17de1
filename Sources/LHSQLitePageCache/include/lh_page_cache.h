#ifndef LH_PAGE_CACHE_H
#define LH_PAGE_CACHE_H

#include <stdint.h>

/// Installs SQLite's default page cache behind a thin wrapper whose
/// xTruncate skips the default one's walk of its whole hash table when no
/// cached page can be at or beyond the limit (see page_cache.c). Must run
/// before SQLite is initialized in this process (before any connection is
/// opened). Returns SQLITE_OK, or SQLite's error code when it was too late
/// (the default page cache then stays, unchanged).
int lh_page_cache_install(void);

/// 1 when the wrapper is the process's page cache.
int lh_page_cache_installed(void);

/// How many xTruncate calls the wrapper skipped and how many it passed on
/// to the default page cache, over all connections of this process.
void lh_page_cache_counts(uint64_t *skipped, uint64_t *passed);

#endif
