// dbdb: an embedded, ordered, transactional key/value store in one append-only file.
//
//   auto db = dbdb::DB::Open("data.dbdb", {.create_if_missing = true});
//   if (!db.ok()) { /* db.status().ToString() */ }
//   (*db)->Put("k", "v");
//   auto txn = (*db)->BeginWrite();          // one writer at a time, across processes
//   (*txn)->Put("a", "1"); (*txn)->Del("b");
//   Status s = (*txn)->Commit();             // atomic; durable in Durability::kSync
//   auto snap = (*db)->GetSnapshot();        // one commit, for as long as it lives
//   auto v = (*db)->Get("k");                // Result<std::optional<std::string>>
//   std::string value;                        // or into a string reused from get to get:
//   auto found = (*db)->Get("k", &value);     // Result<bool>
//
// Thread safety: a DB may be used from many threads. Snapshots, iterators and write
// transactions each belong to one thread at a time. Any number of processes may open the same
// file; writers are serialized by an advisory lock (file "<path>.lock", created by the first
// writer), a commit is in flight while its writer holds a flock of the database file itself, and
// one compaction at a time holds "<path>.compacting.lock" while it writes "<path>.compacting".
//
// Processes: open handles in the process that uses them. A child forked from a process with open
// handles opens its own: a parent's handle refuses every read and write in the child
// (InvalidArgument); snapshots, iterators and transactions made before the fork must not be used
// there either (their file reads may fail as corruption, and the child's copy of the parent's
// table of verified nodes starts empty). Destroying the handle there does not hang: it writes
// nothing, takes none of the handle's locks and waits for none of the parent's threads (fork()
// copies only the thread that called it). It leaves undestroyed a condition
// variable and what the parent's background compaction thread held (among it descriptors and
// mappings of the database file, so space a compaction of the parent's frees stays allocated
// until the child exits or execs). Fork while no other thread is inside a call on the handle, or
// only waiting in one (for a lock or for the background compaction): the destructor frees what
// the handle holds, and a thread caught mid-change by the fork leaves that half-changed
// (undefined behaviour). The handle's own background compaction is such a thread, and a user
// cannot know when it changes the handle: with one possibly running, end a child that holds a
// parent's handle by exec or _exit rather than by destroying the handle. Children made without fork()'s handlers (vfork, a raw clone) are not
// covered. A child never holds its parent's locks: a handle locks through descriptors of their
// own, opened at the first lock and pointed at /dev/null in a child forked later, so a parent
// that dies holding a lock releases it even while its children live.
//
// Lifetimes: a Snapshot keeps what it reads alive (its file, even one compaction replaced, and the
// log overlay of its commit) and may outlive its DB handle. So a file a compaction replaced keeps
// its disk space until the last snapshot of it is destroyed and every handle reading it has
// followed the new file (at its next read or write: docs/FORMAT.md). A WriteTransaction must not
// outlive its DB (it holds the handle's writer lock). An Iterator must not outlive the Snapshot or
// WriteTransaction it came from, and the string_views it returns are valid only until it moves.
//
// Errors are values; no exception crosses this API. The invariants the store keeps (I1-I8) are
// listed in DESIGN.md; the file format is docs/FORMAT.md; the disk assumptions docs/PERSISTENCE.md.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dbdb/file_system.h"
#include "dbdb/status.h"

namespace dbdb {

enum class Durability {
  kSync,    // every commit is synced before Commit returns: a returned commit survives power loss
  kNoSync,  // commits are not synced: NOT durable. A crash may lose any suffix of recent commits
            // (never a part of one, never a commit without the ones before it).
};

struct Options {
  std::shared_ptr<FileSystem> file_system;  // null: the real filesystem
  Durability durability = Durability::kSync;
  bool create_if_missing = false;
  bool read_only = false;           // never writes or creates a file (needs read access only); no
                                    // recovery truncation; probes the in-flight lock (FORMAT.md)
  bool wait_for_writer = true;      // BeginWrite/Compact block for the writer (and compaction)
                                    // lock; false: Busy
  uint32_t key_size_max_bytes = 1024;              // at most node_size_target_bytes / 4
  uint32_t value_size_max_bytes = 1024 * 1024;     // at most 64 MiB
  uint64_t file_size_max_bytes = uint64_t{1} << 40;  // a commit that would pass it fails
  uint32_t node_size_target_bytes = 4096;          // B+tree nodes are split at about this size
  // Per open file: the node cache (the writer's, and reads without a mapping), and a quarter of it
  // (at most 128 MiB) of address space for the table of which mapped nodes were verified, of
  // which only the parts used become resident (32 bytes a node), on small pages (never huge
  // ones: see overlay_merge_keys).
  uint64_t node_cache_bytes = 64 * 1024 * 1024;
  // Readers search the tree's nodes in place through a read-only shared mapping of the file
  // (mmap), each node's checksum and structure verified once per mapping before its first use. A
  // page the disk cannot deliver is an IOError, not a crash: dbdb installs a SIGBUS handler the
  // first time it maps a file, which passes every SIGBUS raised outside its own reads on to the
  // handler installed before it (install your own before opening a database; one installed after
  // replaces dbdb's). false (or a FileSystem that does not map files, or a map that fails, or a
  // file of format 1 or 2): nodes are read with ReadAt into the node cache. A snapshot's mapping
  // stays valid while the snapshot lives, even after a compaction replaced the file.
  bool mmap_reads = true;
  // kNoSync: a writer syncs once this many bytes were appended since the last sync, so that
  // opening and recovery verify at most about this much of the file (docs/FORMAT.md).
  uint64_t unsynced_bytes_max = 4 * 1024 * 1024;
  // A commit appends only its changes (a batch record). Once the batches since the last fold pass
  // this many bytes, a commit folds them into the B+tree, writing each changed node once. Opening a
  // handle, and a reader catching up, replay at most about this much. 0: every commit folds (the
  // version-1 write path). At most 1 GiB.
  uint64_t fold_threshold_bytes = 4 * 1024 * 1024;
  // A handle indexes those batches in memory: the keys changed most recently in a small B-tree,
  // merged into a sorted array (one sequential pass, during which reads of the handle wait) once
  // the tree holds this many keys or a quarter as many as the array, whichever is more. (Its large
  // blocks, from 256 KiB up, are mappings of their own, advised onto small pages whatever the
  // kernel's transparent huge page mode (a fresh huge page cost up to 20 ms to fault in on the
  // machine dbdb is measured on); freed ones are kept for reuse, up to 64 MiB per process, while a
  // handle or snapshot is open.) At a
  // million keys that took about half the time of one B-tree of every key, and about as long for
  // any value from 2,048 up (store/src/log_overlay.h). Tests set it low to exercise the merges.
  // At least 1.
  uint32_t overlay_merge_keys = 16384;
  // Compact automatically, at the start of a write transaction, once the garbage passes the live
  // bytes plus max(fold_threshold_bytes, auto_compact_slack_bytes): the file stays within about
  // twice its live data plus that slack. The thread whose BeginWrite finds it due runs it, online
  // as Compact() does (other writers pause only for its last pass; readers never), or with
  // wait_for_writer=false under the writer lock it holds. One that finds another compaction running
  // goes on without it (its commits leave their folds to that compaction until the log since the
  // fold passes eight times max(fold_threshold_bytes, auto_compact_slack_bytes): then one folds);
  // one that fails before its rename with an I/O error, or gives up, goes on without it too, and
  // any other error (damage: Corruption) fails the transaction that ran it. A failed one is not
  // tried again until the file has grown by that slack from its end after the attempt. false: only
  // Compact() (or `dbdb compact`) compacts.
  bool auto_compact = true;
  uint64_t auto_compact_slack_bytes = 1024 * 1024;
  // Automatic compactions (with wait_for_writer) run on a thread of the handle's own, started by
  // the transaction that finds one due, which goes on at once, as do the transactions after it:
  // commits append to the log (no fold) meanwhile, and the compaction copies them after the tree
  // and folds them with it. A writer waits for it only once the log since the fold passes
  // eight times the slack above (closing the handle asks a running one to give up, and waits for
  // it). Its errors come back from the next write transaction (an I/O error before
  // the rename backs off as above; one after it fails the handle, as any write's). A FileSystem
  // whose AllowsBackgroundThreads() is false (the simulated one) gets the inline compaction above.
  bool background_compaction = true;
  // When a handle that committed is closed, append a checkpoint (as Checkpoint() does) if the
  // commits since the last one are at least two and take at least as many bytes as it; without
  // waiting for the writer lock (busy: skipped), and best effort (an error is not reported and
  // loses nothing). The next open then replays the checkpoint and what follows it, not the log.
  bool checkpoint_on_close = true;
  // When a handle that committed is closed and the unfolded log (what the next open replays: the
  // newest checkpoint and the batches after it) passes this many bytes, it folds the log into the
  // tree instead of checkpointing it: a close fold, a commit that changes nothing (it restates the
  // newest txn id) and writes each changed key's path once, as a commit's fold does; or, if those
  // nodes would make automatic compaction due (and it is not backing off after a failure), an
  // online compaction (a closing handle's running background compaction is abandoned first; the
  // close's own lets the writer lock go while it writes the tree, and is abandoned in its turn if
  // another writer holds the lock at its last pass; it only tries the compaction lock, and while
  // another compaction holds that, the close writes the checkpoint above instead, if
  // checkpoint_on_close, and else nothing). The next open then reads no log: opening
  // takes the same time whatever the log held (docs/FORMAT.md, "Close folds"). A close may so
  // take as long as a fold or a compaction. Whether to take the writer lock at all is judged from
  // the log this handle last saw (with checkpoint_on_close off, a log other handles grew since is
  // theirs to fold). Best effort and without waiting for the writer lock, as the checkpoint. Only
  // in Durability::kSync (in no-sync mode a close fold would not be synced, and every open would
  // hash it: the close checkpoints instead). UINT64_MAX: never.
  uint64_t fold_on_close_bytes = 256 * 1024;
  // A writer grows the file ahead of its commits (fallocate) by this much past the commit that
  // needs more room, or by eight times that commit's size if more (a commit that does not fold; at
  // most 1 MiB), so that the commits after it write into space the file already has and their
  // syncs record no new size: on ext4, about 1.3-1.5x as many one-put durable commits a second.
  // The zeros after the newest commit are not a tail: the next writer (any process) writes into
  // them, and a handle that committed cuts them when it closes (if it can take the writer lock at
  // once). Readers and recovery scan them only where the file system reports them as data (pages
  // read into the cache, or no SEEK_HOLE): at most what was allocated ahead per look (this much,
  // or up to 1 MiB after a large batch commit). 0 (nothing allocated ahead, whatever the commit),
  // or a FileSystem that does not allocate: the file grows with each commit. At most 1 MiB (what
  // every writer keeps).
  uint64_t allocate_ahead_bytes = 64 * 1024;
};

// Ordered iteration over one snapshot (or a write transaction's view). Starts unpositioned.
// Every move returns its error; an error also makes the iterator invalid and is kept in status(),
// so a loop `for (it->SeekToFirst(); it->Valid(); it->Next()) {...}` checks `it->status()` after
// it to tell the end from a failure (LevelDB's pattern).
class Iterator {
 public:
  virtual ~Iterator() = default;
  virtual Status SeekToFirst() = 0;
  virtual Status Seek(std::string_view key) = 0;  // the first key >= key
  virtual Status Next() = 0;                      // REQUIRES: Valid()
  virtual bool Valid() const = 0;
  virtual Status status() const = 0;  // the error of the last move, Ok if none
  virtual std::string_view key() const = 0;    // REQUIRES: Valid(); valid until the next move
  virtual std::string_view value() const = 0;  // REQUIRES: Valid(); valid until the next move
};

struct KeyValue {
  std::string key;
  std::string value;
};

// A range for Scan: keys in [begin, end); an empty `end` with has_end=false means no upper bound.
struct ScanRange {
  std::string begin;
  std::optional<std::string> end;
  uint64_t limit = UINT64_MAX;  // at most this many pairs

  static ScanRange Prefix(std::string_view prefix);  // every key starting with `prefix`
};

namespace detail {
// Get(key) in terms of Get(key, &value), for Snapshot, WriteTransaction and DB.
template <typename Reader>
Result<std::optional<std::string>> GetAsOptional(Reader& reader, std::string_view key) {
  std::string value;
  Result<bool> found = reader.Get(key, &value);
  if (!found.ok()) return found.status();
  if (!*found) return std::optional<std::string>();
  return std::optional<std::string>(std::move(value));
}
}  // namespace detail

// A read-only view of one commit, unchanged for its whole life (I4). Cheap; does not block the
// writer; keeps the file it reads alive even if compaction replaces it.
class Snapshot {
 public:
  virtual ~Snapshot() = default;
  virtual uint64_t txn_id() const = 0;  // the commit it shows; 0 for an empty new database
  // The value of `key`, or nullopt when absent.
  Result<std::optional<std::string>> Get(std::string_view key) { return detail::GetAsOptional(*this, key); }
  // The same into `*value`, assigned (so a string reused across gets keeps its capacity and most
  // gets allocate nothing): true when found; false when absent, `*value` untouched; on an error
  // `*value` is unspecified. `value` may be the string `key` views (the key is not read after
  // `*value` is written). REQUIRES: value != nullptr.
  virtual Result<bool> Get(std::string_view key, std::string* value) = 0;
  virtual std::unique_ptr<Iterator> NewIterator() = 0;
  virtual Result<std::vector<KeyValue>> Scan(const ScanRange& range) = 0;
};

// The one write transaction of the database at a time. Reads see its own writes. Nothing is
// visible to anyone else until Commit returns OK; Abort (or destruction) drops everything.
class WriteTransaction {
 public:
  virtual ~WriteTransaction() = default;
  virtual uint64_t base_txn_id() const = 0;  // the commit it started from (always the newest)
  // As Snapshot's Get, both forms.
  Result<std::optional<std::string>> Get(std::string_view key) { return detail::GetAsOptional(*this, key); }
  virtual Result<bool> Get(std::string_view key, std::string* value) = 0;
  virtual std::unique_ptr<Iterator> NewIterator() = 0;
  virtual Result<std::vector<KeyValue>> Scan(const ScanRange& range) = 0;
  virtual Status Put(std::string_view key, std::string_view value) = 0;  // checks the limits
  virtual Status Del(std::string_view key) = 0;  // deleting a missing key is not an error
  // Writes the changes as one atomic commit. A transaction without changes commits nothing.
  // On an I/O error the handle fails (I7): further writes return Failed until reopened.
  virtual Status Commit() = 0;
  virtual void Abort() = 0;
};

// Blind puts and deletes for DB::Write, applied in order (a later change to a key wins).
class WriteBatch {
 public:
  struct Change {
    std::string key;
    std::optional<std::string> value;  // nullopt: a delete
  };
  void Put(std::string_view key, std::string_view value) {
    bytes_ += key.size() + value.size();
    changes_.push_back({std::string(key), std::string(value)});
  }
  void Del(std::string_view key) {
    bytes_ += key.size();
    changes_.push_back({std::string(key), std::nullopt});
  }
  void Clear() {
    changes_.clear();
    bytes_ = 0;
  }
  const std::vector<Change>& changes() const { return changes_; }
  uint64_t bytes() const { return bytes_; }  // of its keys and values

 private:
  std::vector<Change> changes_;
  uint64_t bytes_ = 0;
};

struct CheckReport {
  uint64_t commits = 0;          // commit records verified along the chain
  uint64_t records = 0;          // records verified in the committed region
  uint64_t nodes = 0;            // nodes reachable from the newest root
  uint64_t keys = 0;
  uint32_t tree_height = 0;
  uint64_t bytes_verified = 0;
  uint64_t tail_bytes = 0;       // bytes after the newest commit (torn or uncommitted writes)
                                 // that the next writer cuts
  uint64_t allocated_bytes = 0;  // or the zeros after it that the next writer keeps and writes
                                 // into (space allocated ahead: docs/FORMAT.md); one is 0
};

struct Stats {
  uint64_t keys = 0;
  uint64_t unfolded_bytes = 0;    // batch, commit and seal bytes since the last fold (replayed on open)
  uint64_t txn_id = 0;            // the newest commit's id
  uint64_t commits_in_file = 0;   // commit records in this file (reset by compaction)
  uint64_t file_size_bytes = 0;
  uint64_t allocated_bytes = 0;   // of file_size_bytes, zeros allocated ahead of the next commit
                                  // (CheckReport::allocated_bytes)
  uint64_t live_bytes = 0;        // the header, the fold's tree, the unfolded log, the newest commit
  double garbage_ratio = 0;       // 1 - live_bytes / (file_size_bytes - allocated_bytes)
  uint32_t tree_height = 0;
  uint64_t generation = 0;        // compactions this file has been through
  // This handle's, since it opened (not the file's): how often its writers waited for its
  // background compaction because the log since the fold had passed eight compaction slacks
  // (Options::background_compaction), for how long in all, and how many compacted files that
  // compaction installed. A writer that outruns the compaction is held to its pace here. Only
  // those waits count (a lower bound of what compaction costs writers): not a wait for the writer
  // lock while the compaction's last pass holds it, nor Writes queued behind a group's leader
  // while it waits. Several writer threads' waits add up (past the time elapsed, possibly), and
  // a wait that found the compaction already done counts, with its near-zero time.
  uint64_t writer_stalls = 0;
  uint64_t writer_stall_micros = 0;
  uint64_t background_compactions = 0;
  // This handle's, with mapped reads (Options::mmap_reads). nodes_verified: the nodes its reads
  // verified at their first use (I5) and entered in the verified-node table, in the file it
  // reads now (from 0 at each file it starts reading; a node verified again, after the table let
  // it go or in a newer mapping, counts again). nodes_warmed: the nodes its compactions verified
  // in their new files before the rename, since it opened (a compaction abandoned after its
  // warm-up included). A compaction warms its file only as far as the handle read since the last
  // one: at most its gets and snapshots times the tree's height, and half the verified-node table
  // the node-cache budget sizes (docs/PERSISTENCE.md).
  uint64_t nodes_verified = 0;
  uint64_t nodes_warmed = 0;
};

class DB {
 public:
  virtual ~DB() = default;

  // Opens (or with create_if_missing creates) the database file at `path`. Readers never modify
  // the file; a torn tail is truncated by the first write transaction (I6).
  static Result<std::unique_ptr<DB>> Open(const std::string& path, const Options& options);

  // Auto-commit conveniences: Get is one read snapshot (both forms as Snapshot's); Put and Del are
  // a Write of one change.
  Result<std::optional<std::string>> Get(std::string_view key) { return detail::GetAsOptional(*this, key); }
  virtual Result<bool> Get(std::string_view key, std::string* value) = 0;
  virtual Status Put(std::string_view key, std::string_view value) = 0;
  virtual Status Del(std::string_view key) = 0;

  // Commits `batch` atomically (all of it or none; durable when it returns OK in kSync), without
  // reading anything first. Group commit: Writes from several threads of this handle that arrive
  // while one is committing are committed together by the next, as one transaction (in the order
  // they arrived, up to about 1 MiB beyond the first), with one sync; so concurrent Writes may
  // share a txn id, and a snapshot sees each batch whole, never a part. Each call returns once
  // its own batch is committed, with that commit's status (an error: as Commit's). A batch whose
  // key or value breaks a limit is refused whole (LimitExceeded) before it joins a group. An empty
  // batch commits nothing. Transactions that read (BeginWrite) are never grouped.
  virtual Status Write(const WriteBatch& batch) = 0;

  virtual Result<std::unique_ptr<WriteTransaction>> BeginWrite() = 0;
  virtual Result<std::unique_ptr<Snapshot>> GetSnapshot() = 0;

  // Rewrites the newest commit into a fresh file and atomically replaces the old one (I8), online:
  // the tree is written from a snapshot without the writer lock, then the commits made meanwhile
  // are copied after it in passes, the last under the writer lock (with the rename), so writers
  // pause only for the commits of the pass before it (at most 4 passes without the lock, ending
  // early once one copies less than 1 MiB). Readers keep reading. Busy with
  // wait_for_writer=false when another compaction or the writer lock is held.
  virtual Status Compact() = 0;

  // Appends a checkpoint: a commit that changes nothing (it restates the newest commit's txn id)
  // whose batch holds every key's newest change since the last fold, so that opening a handle, and
  // a handle catching up from scratch, read that one batch and the commits after it instead of
  // replaying every batch since the fold (docs/FORMAT.md, "Checkpoints"). Nothing to do (Ok) when
  // no commit follows the last checkpoint or fold. Durable as a commit is (kSync: synced, then
  // sealed); a write error fails the handle as a commit's does.
  virtual Status Checkpoint() = 0;

  // Converts a file of an older version (1 to 3, which this build opens read-only) into the
  // current format by verifying it (as Check() does: a file that does not verify is Corruption,
  // and is left as it is) and compacting it, both under the compaction lock and the writer lock
  // (which older writers take too). A current file is left as it is. Afterwards a build that only
  // knows an older version refuses the file.
  static Status Upgrade(const std::string& path, const Options& options);

  // Verifies every record of the committed region, the commit chain and every tree invariant.
  virtual Result<CheckReport> Check() = 0;
  virtual Result<Stats> GetStats() = 0;

  virtual const std::string& path() const = 0;
};

}  // namespace dbdb
