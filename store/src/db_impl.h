// DBImpl: the state shared by a DB handle's snapshots and write transactions. Private.
//
// Locking order: writer_mutex_ -> the cross-process FileLock -> state_mutex_.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "dbdb/db.h"
#include "format.h"
#include "tree.h"
#include "tree_file.h"

namespace dbdb {

// What a snapshot pins: a file and one of its commits (none for an empty new database).
struct View {
  std::shared_ptr<TreeFile> file;
  std::optional<format::Commit> commit;

  uint64_t txn_id() const { return commit ? commit->txn_id : 0; }
  TreeRoot root() const { return commit ? RootOf(*commit) : TreeRoot{}; }
  // Where the next transaction appends (after the newest commit's seal, if sealed).
  uint64_t end() const { return commit ? commit->end() : format::kFileHeaderSizeBytes; }
  // Where the next transaction's body starts: the newest commit record's end, so that body
  // covers the seal, which is never synced by itself.
  uint64_t body_start() const { return commit ? commit->record_end() : format::kFileHeaderSizeBytes; }
};

// Held for the life of a write transaction or a compaction: the in-process mutex and the
// cross-process lock file.
struct WriterLock {
  std::unique_lock<std::mutex> mutex;
  std::unique_ptr<FileLock> file_lock;
};

class DBImpl final : public DB {
 public:
  DBImpl(std::string path, const Options& options, std::shared_ptr<FileSystem> fs,
         std::shared_ptr<TreeFile> file, std::optional<format::Commit> newest);

  Result<std::optional<std::string>> Get(std::string_view key) override;
  Status Put(std::string_view key, std::string_view value) override;
  Status Del(std::string_view key) override;
  Result<std::unique_ptr<WriteTransaction>> BeginWrite() override;
  Result<std::unique_ptr<Snapshot>> GetSnapshot() override;
  Status Compact() override;
  Result<CheckReport> Check() override;
  Result<Stats> GetStats() override;
  const std::string& path() const override { return path_; }

  // The newest commit of the file the path names now (following a compaction's replacement).
  // For a reader, the newest *settled* commit (SettledForReader); `writer` (holding the lock)
  // takes an unsealed newest commit as is. Never writes to the file.
  Result<View> Refresh(bool writer);
  // Switches to the file the path names now if compaction replaced ours; returns its size.
  // REQUIRES: state_mutex_ held.
  Result<uint64_t> FollowReplacedFile(bool writer);
  // The commit a reader may show when the newest one, `unsealed`, is not sealed, decided by the
  // in-flight lock: the one before it while its writer is between writing and sealing it, else
  // it (a dead writer's, synced first: the reader's only write-like act, which changes no byte).
  // REQUIRES: state_mutex_ held.
  Result<std::optional<format::Commit>> SettledForReader(uint64_t known_end, uint64_t known_offset);

  // Takes the writer lock, follows the newest commit, and truncates a torn tail (I6).
  Result<WriterLock> AcquireWriter();
  Result<View> PrepareWriterView();  // REQUIRES: writer lock held

  // Appends `bytes` (nodes then the commit record) at commit.body_offset, syncs in kSync mode,
  // and publishes the commit. REQUIRES: writer lock held.
  Status AppendCommit(const View& base, std::string* bytes, format::Commit commit);

  // The in-flight lock (flock of the database file itself): held by a writer from the first byte
  // of a commit to its seal or rollback, never across a transaction; a reader probes it.
  Result<std::unique_ptr<FileLock>> LockInFlight();
  // Makes `view`'s commit the handle's newest if it is newer. REQUIRES: state_mutex_ not held.
  void Publish(const View& view);

  // Marks the handle failed after an I/O error on the write path (I7) and returns the error.
  Status Fail(const Status& cause);
  // Truncates to the end of `base`, re-writes its seal and syncs; seals it if its writer died
  // before sealing it. REQUIRES: writer lock held (and the in-flight lock
  // when `base` may be unsealed by an in-flight commit of this handle: a rollback).
  Status SettleBase(View& base);
  // Fail after a commit's write or sync failed: first settle the file back to `base` (I7). If
  // that fails too, the in-flight lock (*in_flight) is kept until the handle is closed.
  Status FailCommit(const View& base, const Status& cause, std::unique_ptr<FileLock>* in_flight);
  // After a failed rollback, keeps the writer lock's file lock until the handle is closed, so no
  // other writer builds on (and seals) a commit whose sync failed while this handle lives.
  void HoldWriterLockIfRollbackFailed(WriterLock* lock);
  Status CheckWritable();

  const Options& options() const { return options_; }
  Status ValidateKey(std::string_view key) const;
  Status ValidateValue(std::string_view value) const;

 private:
  const std::string path_;
  const std::string lock_path_;
  const Options options_;
  const std::shared_ptr<FileSystem> fs_;

  std::mutex writer_mutex_;
  // Under the writer lock: the end of the last commit record this handle knows to be durable in
  // the current file (0 if none), so a kSync writer syncs a base it did not sync itself.
  uint64_t durable_end_ = 0;
  // Files are told apart by their TreeFile, never by an inode number, which the filesystem may
  // give to a new file once the old one is gone.
  std::weak_ptr<TreeFile> durable_file_;  // the file durable_end_ is about
  // Under the writer lock: the file whose name this handle made durable (synced its directory).
  std::weak_ptr<TreeFile> name_durable_file_;
  bool KnownDurable(const View& view) const {
    return durable_file_.lock() == view.file && durable_end_ == view.body_start();
  }
  uint64_t DurableEndIn(const View& view) const {
    return durable_file_.lock() == view.file ? durable_end_ : 0;
  }
  void SetDurable(const View& view, uint64_t end) {
    durable_file_ = view.file;
    durable_end_ = end;
  }

  std::mutex state_mutex_;
  std::shared_ptr<TreeFile> file_;           // GUARDED_BY(state_mutex_)
  std::optional<format::Commit> newest_;     // GUARDED_BY(state_mutex_)

  std::atomic<bool> failed_{false};
  std::mutex failure_mutex_;
  std::string failure_;                        // GUARDED_BY(failure_mutex_)
  bool rollback_failed_ = false;               // GUARDED_BY(failure_mutex_)
  // Released in the reverse of the order they were taken: the in-flight lock first.
  std::unique_ptr<FileLock> held_writer_lock_; // GUARDED_BY(failure_mutex_)
  std::unique_ptr<FileLock> held_in_flight_;   // GUARDED_BY(failure_mutex_)
};

// Iterator adapters (iterators.cc).
std::unique_ptr<Iterator> NewTreeIterator(std::shared_ptr<TreeFile> file, TreeRoot root);
using Overlay = std::map<std::string, std::optional<std::string>, std::less<>>;
std::unique_ptr<Iterator> NewMergedIterator(std::shared_ptr<TreeFile> file, TreeRoot root, const Overlay* overlay);
Result<std::vector<KeyValue>> ScanWith(Iterator& iterator, const ScanRange& range);

}  // namespace dbdb
