// DBImpl: the state shared by a DB handle's snapshots and write transactions. Private.
//
// Locking order: writer_mutex_ -> the cross-process FileLock -> background_mutex_ ->
// compaction_state_mutex_, and the FileLock -> state_mutex_ -> an overlay's lock. failure_mutex_
// is taken last, and nothing while holding it. The background compaction's thread is joined under
// background_mutex_ only once it has ended (after clearing its running flag it takes nothing but
// the condition variable's own mutex, inside its notify, still under background_mutex_). Checked
// by clang's -Wthread-safety where annotated; writer_mutex_ (held through a movable
// std::unique_lock for a whole transaction) is not, nor the fields of a queued write
// (PendingWrite), which are under write_queue_mutex_ but cannot name it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "change_counter.h"
#include "dbdb/db.h"
#include "fork_generation.h"
#include "format.h"
#include "large_alloc.h"
#include "log_overlay.h"
#include "thread_annotations.h"
#include "tree.h"
#include "tree_file.h"

namespace dbdb {

// What a snapshot pins: a file, one of its commits (none for an empty new database), and the
// overlay of the commits since that commit's fold (versions after the commit are not seen).
struct View {
  std::shared_ptr<TreeFile> file;
  std::optional<format::Commit> commit;
  std::shared_ptr<const LogOverlay> overlay;  // null when nothing was committed since the fold

  uint64_t txn_id() const { return commit ? commit->txn_id : 0; }
  TreeRoot root() const { return commit ? RootOf(*commit) : TreeRoot{}; }
  // Where the next transaction appends (after the newest commit's seal, if sealed).
  uint64_t end() const { return commit ? commit->end() : format::kFileHeaderSizeBytes; }
  // Where the next transaction's body starts: the newest commit record's end, so that body
  // covers the seal, which is never synced by itself.
  uint64_t body_start() const { return commit ? commit->record_end() : format::kFileHeaderSizeBytes; }
  uint64_t log_bytes() const { return overlay ? overlay->log_bytes() : 0; }
  // The file's bytes since the fold commit's seal: every batch, checkpoint, commit and seal since.
  uint64_t bytes_since_fold() const {
    if (!commit || commit->folded()) return 0;
    const uint64_t fold_end = commit->fold_offset + format::CommitRecordSize(commit->version) + format::kSealRecordSizeBytes;
    return commit->end() - std::min(commit->end(), fold_end);
  }
  // What folds count: those bytes but the checkpoints' the overlay knows of (every one for an
  // overlay that replayed from the fold, the newest for one opened at a checkpoint, so never
  // less than the batches', commits' and seals' since the fold). Checkpoints restate the log and
  // are not counted twice; every batch is, so the versions an overlay keeps stay bounded by the
  // threshold.
  uint64_t log_bytes_since_fold() const {
    const uint64_t bytes = bytes_since_fold();
    return bytes - std::min(bytes, overlay ? overlay->checkpoints_bytes() : 0);
  }
  // The bytes a copy of this view needs: the header, the fold's tree, and the unfolded log (which
  // ends with the newest commit and its seal), or the newest commit and seal when nothing is
  // unfolded; with `log_is_garbage`, as after a fold.
  uint64_t live_bytes(bool log_is_garbage = false) const {
    if (!commit) return format::kFileHeaderSizeBytes;
    uint64_t log = log_is_garbage ? 0 : log_bytes();
    return format::kFileHeaderSizeBytes + commit->tree_bytes + (log > 0 ? log : commit->end() - commit->offset);
  }
  // The value of `key` in this view, into `*value` (DB::Get's second form): the overlay's newest
  // change at or before the commit, else the fold's tree.
  Result<bool> Get(std::string_view key, std::string* value) const;
};

// What a get reads of a view: its file, overlay, txn id and root, without the commit's other
// fields (DBImpl::Get takes these from a fresh view instead of copying the view).
struct ReadPoint {
  std::shared_ptr<TreeFile> file;
  std::shared_ptr<const LogOverlay> overlay;
  uint64_t txn_id = 0;
  TreeRoot root;

  // View::Get's lookup: the overlay's newest change at or before txn_id, else the fold's tree.
  static Result<bool> Get(TreeFile& file, const LogOverlay* overlay, uint64_t txn_id, const TreeRoot& root,
                          std::string_view key, std::string* value);
};

// A write transaction's own changes: a put (a value) or a delete (nullopt) per key.
using Overlay = std::map<std::string, std::optional<std::string>, std::less<>>;

// Folds also come once the file's bytes since the fold (checkpoints included) pass this many
// fold thresholds (DBImpl::FoldDue).
inline constexpr uint64_t kFoldFileBytesFactor = 3;

// While a compaction is pending, writers append without folding (the compaction folds the log),
// but only until the log since the fold passes this many compaction slacks
// (max(fold_threshold_bytes, auto_compact_slack_bytes)): then, behind the handle's own background
// compaction, they wait for it to install its file (or end); behind one that another handle or
// process holds the lock of (for as long as it takes), the commit after it folds
// (DBImpl::PendingLogBound).
inline constexpr uint64_t kPendingLogSlackFactor = 8;

// A writer allocates ahead (DBImpl::AllocateAhead) at least this many times the commit that needs
// more room (a transaction's batch commit: not a fold or a checkpoint), up to
// format::kAllocateAheadMaxBytes.
inline constexpr uint64_t kAllocateAheadCommits = 8;

// How often, at most, a background compaction's last pass tries the writer's lock file again.
inline constexpr std::chrono::microseconds kGiveUpPollMax{2000};

// True on the thread of a handle's background compaction (its last pass can give up: AcquireWriter).
inline thread_local bool in_background_compaction = false;

// The bytes a commit adds to the unfolded log: its batch, commit and seal records.
inline uint64_t LogRecordBytes(const format::Commit& c) {
  return c.batch_offset == 0 ? 0 : c.record_end() + format::kSealRecordSizeBytes - c.batch_offset;
}

// True when two commits name the same fold's tree (every commit after a fold repeats its fields).
inline bool SameTree(const format::Commit& a, const format::Commit& b) {
  return a.root_offset == b.root_offset && a.root_length == b.root_length && a.tree_height == b.tree_height &&
         a.key_count == b.key_count && a.tree_bytes == b.tree_bytes;
}

// The one way a commit record is made, for commits, folds and compaction: appends the record of
// `commit` (at commit.offset) to `bytes`, once the decoder accepts it (paired with the decoder's
// checks on every read: never write a commit a reader would reject).
void AppendCommitRecord(std::string* bytes, const format::Commit& commit);

// The one way a commit's bytes are assembled (commits, folds, and the log a compaction copies):
// `base`'s seal again (when sealed; none for a file's first commit), then `records` (a fold's
// nodes, the batch), then the record of *commit, whose offset, body_offset and body_checksum this
// sets (the caller sets the rest). The bytes are written at the base's record end (the header's
// end for a first commit); the new commit's seal is not included.
std::string AssembleCommit(const std::optional<format::Commit>& base, std::string_view records,
                           format::Commit* commit);

// Ok when this build writes `file`'s format; ReadOnly with what to do otherwise.
Status WritableVersion(const TreeFile& file);

// Held for the life of a write transaction or a compaction: the in-process mutex, the
// cross-process lock file and the change counter's odd mark (change_counter.h). Released in that
// order's reverse, the mark first, while the locks are still held: moving another lock into one
// releases what it held first, so an even value is never written after the locks are gone.
struct WriterLock {
  WriterLock() = default;
  WriterLock(WriterLock&&) noexcept = default;
  WriterLock& operator=(WriterLock&& other) noexcept {
    if (this != &other) {
      Release();
      mutex = std::move(other.mutex);
      file_lock = std::move(other.file_lock);
      mark = std::move(other.mark);
    }
    return *this;
  }
  ~WriterLock() { Release(); }
  void Release() {
    mark.reset();
    file_lock.reset();
    if (mutex.owns_lock()) mutex.unlock();
  }
  std::unique_lock<std::mutex> mutex;
  std::unique_ptr<FileLock> file_lock;
  std::unique_ptr<ChangeMark> mark;
};

class WriteTransactionImpl;

class DBImpl final : public DB {
 public:
  DBImpl(std::string path, const Options& options, std::shared_ptr<FileSystem> fs,
         std::shared_ptr<TreeFile> file, bool upgrading);
  // Writes a checkpoint when due (Options::checkpoint_on_close).
  ~DBImpl() override;

  // Opens the database at `path`; `upgrading`: a handle that may write to a version-1 file, only
  // to compact it into the current version (DB::Upgrade).
  static Result<std::unique_ptr<DBImpl>> OpenImpl(const std::string& path, const Options& options, bool upgrading);
  // DB::Upgrade: verifies a version-1 file under the writer lock, then compacts it into the
  // current version (a current file is left as it is).
  static Status UpgradeImpl(const std::string& path, const Options& options);
  // DB::Upgrade of an older-version file that holds no commit: an empty database of the current
  // version (generation + 1) replaces it as a compaction's file does (PATH.compacting, written,
  // synced, renamed, the directory synced). REQUIRES: the compaction lock and the writer lock.
  Status InstallEmptyUpgrade(const View& view);

  using DB::Get;
  Result<bool> Get(std::string_view key, std::string* value) override;
  Status Put(std::string_view key, std::string_view value) override;
  Status Del(std::string_view key) override;
  Status Write(const WriteBatch& batch) override;
  Result<std::unique_ptr<WriteTransaction>> BeginWrite() override;
  Result<std::unique_ptr<Snapshot>> GetSnapshot() override;
  Status Compact() override;
  Status Checkpoint() override;
  Result<CheckReport> Check() override;
  Result<Stats> GetStats() override;
  const std::string& path() const override { return path_; }

 private:
  // The write path of a transaction: CheckWritable, ValidateKey/Value, CommitChanges and
  // HoldWriterLockIfRollbackFailed. Nothing else outside DBImpl reaches its internals.
  friend class WriteTransactionImpl;

  // Compaction (compact.cc, I8). What a compaction hands back: the writer lock (taken for its
  // last pass) and the view of the compacted file.
  struct Compacted {
    WriterLock lock;
    View view;
  };
  // The log a compaction has copied into its new file so far.
  struct CopiedLog {
    format::Commit source;  // the newest commit copied, as the old file holds it
    format::Commit last;    // ... as the new file holds it (at first, the compacted tree's commit)
    uint64_t synced_end;    // the new file is durable below this
    // The copied commits' changes over the compacted tree: the new file's overlay, built as they
    // are copied (most of them without the writer lock), so installing it replays nothing.
    std::shared_ptr<LogOverlay> overlay;
  };
  struct LockedLog {
    WriterLock lock;
    CopiedLog log;
    std::shared_ptr<TreeFile> warmed;  // WarmCompacted's, or null
  };
  // Online compaction: the tree of a reader's snapshot written without the writer lock, the
  // commits since copied in passes, the last under the writer lock, which it returns held.
  // The last pass waits for the writer lock as the handle's wait_for_writer says. nullopt: nothing
  // committed. An error before the rename leaves the database and the handle as they were; one
  // after it fails the handle. REQUIRES: the compaction lock, not the writer lock.
  Result<std::optional<Compacted>> CompactOnline();
  // The one compaction, from `start`: into "<path>.compacting", then renamed over the database.
  // With `held` (the writer lock, held since `start` was taken), no pass runs without it.
  Result<Compacted> CompactFrom(const View& start, WriterLock* held);
  Result<LockedLog> WriteCompacted(const View& start, const std::string& temp, File& out,
                                   WriterLock* held);  // (its writes)
  // Truncates `out`, writes the header, `view`'s keys as a packed tree and its commit, and syncs.
  Result<format::Commit> WriteCompactedTree(const View& view, File& out);
  // The compacted file at `temp` opened read-only, its tree (`tree`'s) verified through a mapping
  // (TreeFile::WarmTree), for InstallCompacted to take the mapping and the verified nodes from:
  // the handle then reads the new file from its first get as it read the old one, its nodes
  // verified and their pages mapped, instead of verifying and faulting in every node again. Null
  // (nothing warmed) for a handle that has not read since the last install, on the close's
  // compaction, and without mapped reads; WriteCompacted does not call it under a held writer
  // lock. A node whose read through the mapping fails is read again from the file: damage there
  // fails the compaction before the rename (a file is never renamed over the database after a
  // read of it from the file failed); bytes that verify there install it unwarmed (null).
  Result<std::shared_ptr<TreeFile>> WarmCompacted(const std::string& temp, const format::Commit& tree);
  // Copies the commits after log->source through `upto`'s commit (same file) into `out` after
  // log->last, and syncs; returns the bytes written (0: nothing new).
  Result<uint64_t> CopyLog(const View& upto, CopiedLog* log, File& out);
  // The commits after log.source through `upto`'s commit, newest first, read back along the chain
  // and checked to follow it in txn ids (empty: none). Aborted when log.source no longer reads back
  // as copied.
  Result<std::vector<format::Commit>> ReadChainSinceCopied(const View& upto, const CopiedLog& log);
  // Writes `source`'s batch and a commit record for it over log->last's tree into `out` at `at`,
  // applies it to log->overlay and moves log->last and log->source on; returns the bytes written.
  Result<uint64_t> CopyCommit(const View& upto, const format::Commit& source, CopiedLog* log, File& out,
                              uint64_t at, ReadBytes* buffer);
  // What a handle stops reading when it follows a replaced file or installs a compacted one, for
  // its caller to let go after state_mutex_ (the last reference closes the file's descriptors and
  // mapping, and frees the overlay).
  struct Retired {
    std::shared_ptr<TreeFile> file;
    std::shared_ptr<LogOverlay> overlay;
    ReadBytes kept_body;  // the old file's (TreeFile::DropKeptBody), up to 16 MiB
  };
  // Renames the written file over the database and follows the new file (both under
  // state_mutex_, so the handle's readers never see the one without the other), whose overlay
  // through `newest` is `overlay` (CopiedLog), taking `warmed`'s mapping and verified nodes if not
  // null (WarmCompacted); then syncs the directory.
  Result<View> InstallCompacted(const std::string& temp, const format::Commit& newest,
                                std::shared_ptr<LogOverlay> overlay, std::shared_ptr<TreeFile> warmed)
      EXCLUDES(state_mutex_);
  // InstallCompacted's rename, open and switch: `installed` is the file opened, `overlay` moved
  // in only on success; what the handle stopped reading goes into `retired`, for the caller to let
  // go after the lock (as FollowReplacedFile's).
  Status InstallLocked(const std::string& temp, const format::Commit& newest, std::shared_ptr<LogOverlay>& overlay,
                       const std::shared_ptr<TreeFile>& warmed, Retired* retired, std::shared_ptr<TreeFile>* installed)
      REQUIRES(state_mutex_);
  // The lock one compaction at a time holds ("<path>.compacting.lock").
  Result<std::unique_ptr<FileLock>> LockCompaction(bool wait);
  // True when a write transaction should compact before it starts (REQUIRES: the writer lock).
  bool AutoCompactionDue(const View& view) const;
  // The automatic compaction BeginWrite starts (best effort): online with wait_for_writer, under
  // the writer lock it holds without (waiting for that lock again is what the option forbids).
  // Returns with *lock held again and *view the transaction's base.
  Status AutoCompact(WriterLock* lock, View* view);
  // True when automatic compactions run on a thread of the handle's own (background_compaction,
  // with wait_for_writer, on a filesystem that allows it).
  bool CompactsInBackground() const;
  // Starts the background compaction, which holds `compaction_lock`, found due on `due`; false
  // (the lock released) when no thread could be started (REQUIRES: the writer lock, none running).
  bool StartBackgroundCompaction(std::unique_ptr<FileLock> compaction_lock, const View& due) EXCLUDES(background_mutex_);
  // The background thread: an online compaction from the newest settled commit, again while what
  // it copied passes the fold threshold; its outcome as AutoCompact's (the backoff, from `file`
  // and `end` or the file it compacted last, or an error for the next write transaction).
  void RunBackgroundCompaction(std::unique_ptr<FileLock> compaction_lock, std::shared_ptr<TreeFile> file,
                               uint64_t end);
  // True while a background compaction runs.
  bool BackgroundCompactionRunning() EXCLUDES(background_mutex_);
  // Waits until the running background compaction installs a file after the `installed`-th (as
  // BackgroundInstalled read it, under the writer lock) or ends (REQUIRES: not the writer lock,
  // which its last pass takes).
  void WaitForBackgroundCompaction(uint64_t installed) EXCLUDES(background_mutex_);
  // The files the background compaction installed since the handle opened.
  uint64_t BackgroundInstalled() EXCLUDES(background_mutex_);
  // Asks a running background compaction to give up, and joins its thread (the destructor).
  void StopBackgroundCompaction();
  // Aborted on the background compaction's thread once the handle is closing (checked by
  // compaction between steps).
  Status CheckNotClosing() const;
  // True when the garbage in `view`'s file (of `size` bytes) passes the automatic-compaction
  // threshold; with `fold_bytes`, as it would be after a fold writing about that many bytes.
  bool CompactionDue(const View& view, uint64_t size, uint64_t fold_bytes) const;
  // True while an automatic compaction that failed on `view`'s file waits for the file to grow by
  // the slack before it is tried again (REQUIRES: the writer lock).
  bool CompactionBackingOff(const View& view) const EXCLUDES(compaction_state_mutex_);
  // Makes automatic compaction back off after a failed one on `file`, found due at `end`, until
  // the file has grown by the slack (CompactionBackingOff) past `end` or, if later, the end of the
  // newest commit now (ReaderView: what other writers committed during the attempt).
  void BackOffCompaction(const std::shared_ptr<TreeFile>& file, uint64_t end) EXCLUDES(compaction_state_mutex_);
  uint64_t CompactionSlack() const;  // max(fold_threshold_bytes, auto_compact_slack_bytes)
  // kPendingLogSlackFactor slacks (saturating): past this much log since the fold, a writer
  // stops leaving its fold to a pending compaction (BeginWrite, CommitChanges).
  uint64_t PendingLogBound() const;
  // True when a commit appending `batch_bytes` on `view` folds (the log passes the threshold).
  bool FoldDue(const View& view, uint64_t batch_bytes) const;
  // About how many bytes of nodes a fold of `view`'s log plus `new_keys` more keys writes.
  uint64_t FoldEstimate(const View& view, uint64_t new_keys) const;
  uint32_t file_version() EXCLUDES(state_mutex_) {
    MutexLock guard(&state_mutex_);
    return file_->version();
  }

  // What a reader shows (gets, snapshots, check, stat, open): the newest *settled* commit of the
  // file the path names now (SettledForReaderSyncingADeadWriter decides an unsealed one), with
  // the overlay caught up. Writes no byte; its one write-like act is that function's sync.
  Result<View> ReaderView() EXCLUDES(state_mutex_) { return NewestView(/*writer=*/false); }
  // The reader's view's parts a get reads, when the handle's view is still the newest
  // (NewestView's first test, ViewFreshForReader); else false, and the caller asks ReaderView.
  // A get's fast path: no view (and its commit) copied, no Result built.
  bool FreshReadPoint(ReadPoint* point) EXCLUDES(state_mutex_);
  // NewestView's first test: no writer has held the lock since this handle last looked with none
  // at work (`counter`: the change counter read under state_mutex_, before anything else).
  bool ViewFreshForReader(const std::optional<uint64_t>& counter) const REQUIRES(state_mutex_) {
    return counter && fresh_at_ == counter;
  }
  // What the writer starts from (REQUIRES: the writer lock): the newest commit of the file the
  // path itself names, sealed or not, taken as is (PrepareWriterView then settles it: the
  // writer's writes are there, in SettleBase).
  // `unchanged`: set when the file is as this handle's own last commit left it (MarkChange),
  // and then the view is that commit's, with no look at the file.
  Result<View> WriterView(bool* unchanged) EXCLUDES(state_mutex_) { return NewestView(/*writer=*/true, unchanged); }
  // Both views: follow a replaced file, find the newest commit above the one known, decide it
  // (reader) or take it (writer), catch the overlay up.
  Result<View> NewestView(bool writer, bool* unchanged = nullptr) EXCLUDES(state_mutex_);
  // Switches to the file the path names now if compaction replaced ours, moving the old one and
  // its overlay into `retired`; returns the new file's size.
  Result<uint64_t> FollowReplacedFile(bool writer, Retired* retired) REQUIRES(state_mutex_);
  // Makes `file` (with `overlay`, which may be null) the one this handle reads, moving the old
  // file and overlay into `retired` (FollowReplacedFile, InstallLocked).
  void SwitchFile(std::shared_ptr<TreeFile> file, std::shared_ptr<LogOverlay> overlay, Retired* retired)
      REQUIRES(state_mutex_);
  // The commit a reader may show when the newest one is not sealed, decided by the in-flight
  // lock: the one before it while its writer is between writing and sealing it; else it, a dead
  // writer's, after syncing the file (the reader's only write-like act: it changes no byte, and
  // makes the commit durable before anyone is shown it).
  Result<std::optional<format::Commit>> SettledForReaderSyncingADeadWriter(uint64_t known_end, uint64_t known_offset)
      REQUIRES(state_mutex_);

  // Takes the writer lock (the handle's mutex, then the lock file), waiting as `wait` says; with
  // `give_up`, the lock file is polled (every kGiveUpPollMax at most) and Aborted once *give_up.
  Result<WriterLock> AcquireWriter(bool wait, const std::atomic<bool>* give_up = nullptr);
  Result<WriterLock> AcquireWriter() { return AcquireWriter(options_.wait_for_writer); }
  // AcquireWriter's lock of the lock file (counter_file_'s, opened here if need be; a file that
  // lost its name is closed and the name's file locked instead), taken as `wait` and `give_up` say.
  // REQUIRES: writer_mutex_ held (not checked by clang: see the top of this file).
  Result<std::unique_ptr<FileLock>> LockCounterFile(bool wait, const std::atomic<bool>* give_up);
  // Under both locks: takes the change mark (odd) into lock->mark (last_mark_ its value; the
  // counter mapped once, own_counter_), and learns whether the file is as this handle's own last
  // commit left it (unchanged_since_left_, from left_, which it uses up); writer_at_ is reset.
  Status MarkChange(WriterLock* lock);
  // The writer's base: the newest commit, its tail cut and base settled. REQUIRES: writer lock held.
  Result<View> PrepareWriterView();

  // The one commit builder: the transaction's batch record (after the nodes of a fold, when the
  // unfolded log passes fold_threshold_bytes), then its commit record, appended on `base`.
  // `batch`: the changes, sorted by key, one per key. REQUIRES: writer lock held.
  Status CommitChanges(const View& base, const std::vector<format::BatchChange>& batch);
  // The commit record's fields every commit after `base` fills the same way (the chain, the root,
  // the fold, the batch): for a transaction, a checkpoint and a close fold alike.
  static format::Commit CommitAfter(const View& base, uint64_t txn_id, const TreeRoot& root, uint64_t batch_offset,
                                    uint64_t fold_offset);
  // A fold's tree: `base`'s tree with every key's newest change since its fold, then `batch`,
  // applied; the new nodes go to `writer`.
  static Result<TreeRoot> FoldLog(const View& base, const std::vector<format::BatchChange>& batch, TreeWriter* writer);
  // Appends `bytes` (a fold's nodes, the batch) and then the commit record after `base`, syncs in
  // kSync mode, seals, and publishes the commit (`batch`: its changes, for the handle's overlay).
  // REQUIRES: writer lock held.
  Status AppendCommit(const View& base, std::string* bytes, format::Commit commit,
                      const std::vector<format::BatchChange>* batch);

  // True when `view`'s overlay should be checkpointed: `asked` (Checkpoint()) when a commit follows
  // the last checkpoint (or fold); on close when the commits after it are at least two and at
  // least its size. Never in a file older than format::kCheckpointVersion.
  bool CheckpointDue(const View& view, bool asked) const;
  // Appends a checkpoint of the newest commit when due: a commit restating its txn id whose batch
  // holds every key's newest change since the fold. REQUIRES: writer lock held.
  Status WriteCheckpoint(bool asked);
  Status WriteCheckpointOn(const View& base, bool asked);  // on a base PrepareWriterView gave

  // True when a close folds `view`'s log: in kSync mode, it is not folded and its unfolded bytes
  // (what an open replays) pass fold_on_close_bytes, in a file of format::kCloseFoldVersion or later.
  bool CloseFoldDue(const View& view) const;
  // Appends a close fold on `base`: its log folded into the tree, no batch, its txn id restated.
  // REQUIRES: writer lock held.
  Status WriteCloseFold(const View& base);
  // What a close writes under the writer lock it took (`lock`, which a compaction may move): a
  // close fold when due (a compaction instead, when the fold would make one due), else a
  // checkpoint when due and checkpoint_on_close is set.
  Status FoldOrCheckpointOnClose(WriterLock* lock);

  // The in-flight lock (flock of the database file itself): held by a writer from the first byte
  // of a commit to its seal or rollback, never across a transaction; a reader probes it.
  // Taken through `file` (the base's, which the commit is written to). REQUIRES: writer lock held.
  Result<std::unique_ptr<FileLock>> LockInFlight(File& file);
  // Closes counter_file_ (one that lost its name) and forgets what was
  // learnt through it. REQUIRES: writer_mutex_ held, no lock through it alive.
  void ForgetLockFile();
  // Makes `view`'s commit the handle's newest if it is newer; `changes` (when given) are the
  // commit's batch, applied to the handle's overlay without reading them back.
  void Publish(const View& view, const std::vector<format::BatchChange>* changes = nullptr) EXCLUDES(state_mutex_);
  // Brings overlay_ up to newest_: replays the batches of the commits after the overlay's newest
  // (or after the fold, for a new overlay).
  Status CatchUpOverlay() REQUIRES(state_mutex_);
  // The commits after the overlay's newest, newest first, read back along newest_'s chain and
  // checked to belong to its fold (Corruption if not); `reached` false when the chain passes the
  // overlay's newest commit (or the fold) without meeting it. An overlay still at its fold
  // (`from_fold`) starts from the newest checkpoint on the way back: `checkpoint`, and `commits`
  // are then the commits after it (not it). A commit that restates its predecessor's txn id must
  // name a checkpoint record: anything else (a forged or misdirected commit) is Corruption
  // (StartOverlayAtCheckpoint, ReplayOntoOverlay), never a checkpoint.
  struct ChainToOverlay {
    std::vector<format::Commit> commits;
    std::optional<format::Commit> checkpoint;
    bool from_fold = false;
    bool reached = true;
  };
  Result<ChainToOverlay> ReadChainToOverlay(const format::Commit& newest) REQUIRES(state_mutex_);
  // Replaces the overlay (still at newest's fold) with `checkpoint`'s state, checked to be one.
  Status StartOverlayAtCheckpoint(const format::Commit& newest, const format::Commit& checkpoint)
      REQUIRES(state_mutex_);
  // Applies `newest_first`'s batches to the overlay, oldest first, each checked to follow it.
  Status ReplayOntoOverlay(const std::vector<format::Commit>& newest_first) REQUIRES(state_mutex_);
  // Corruption: commit `c` restates its predecessor's txn id and is not a checkpoint (`why`).
  Status NotACheckpoint(const format::Commit& c, const Status& why) const;
  // A new, empty overlay over the fold `newest` builds on, from the fold commit's txn id (read and
  // checked against `newest`: a fold commit with the same tree and an older txn id).
  Result<std::shared_ptr<LogOverlay>> OverlayAtFold(const format::Commit& newest) REQUIRES(state_mutex_);
  // A new overlay (the arguments are LogOverlay's constructor's), tuned by options_.
  template <typename... Args>
  std::shared_ptr<LogOverlay> NewOverlay(Args&&... args) const {
    auto overlay = std::make_shared<LogOverlay>(std::forward<Args>(args)...);
    overlay->SetMergeKeys(options_.overlay_merge_keys);
    return overlay;
  }
  // The view of the handle's newest commit (the overlay caught up).
  View CurrentView() const REQUIRES(state_mutex_);

  // Grows the base's file ahead of a commit that will end at `end`, when that passes its size
  // (writer_at_; Options::allocate_ahead_bytes), so that the commit's sync records no new size;
  // an allocation that fails is not the commit's failure (its write reports a full disk).
  // REQUIRES: writer lock held, after PrepareWriterView.
  Status AllocateAhead(const View& base, uint64_t end, bool batch_only);  // batch_only: a transaction's commit, not a fold or checkpoint
  // Cuts the zeros after the newest commit as PrepareWriterView or this handle's last commit left
  // the file (writer_at_), unsynced (on close). REQUIRES: writer lock held.
  void CutAllocatedAhead();
  // Marks the handle failed after an I/O error on the write path (I7) and returns the error.
  Status Fail(const Status& cause) EXCLUDES(failure_mutex_);
  // Truncates to the end of `base`, re-writes its seal and syncs; seals it if its writer died
  // before sealing it. REQUIRES: writer lock held (and the in-flight lock
  // when `base` may be unsealed by an in-flight commit of this handle: a rollback).
  Status SettleBase(View& base, bool rollback = false);
  // Writes again, verified, the bytes of the base that no sync of this handle or durable seal
  // proves durable (SettleBase, before its sync).
  Status RewriteUnproven(const View& base);
  // The commits whose bodies lie at or above `from` back from base's (newest first), as far as
  // recovery verified them: never below a commit whose own synced_through covers its body start,
  // nor into a compacted file's first commit (proven: synced before the file had its name).
  Result<std::vector<format::Commit>> ReadUnprovenCommits(const View& base, uint64_t from);
  // Reads `c`'s body and record into *bytes (twice at most) and returns whether they verify as
  // recovery verified them (false: not; an error: the read failed).
  Result<bool> ReadVerifiedCommit(const View& base, const format::Commit& c, std::string* bytes);
  // Fail after a commit's write or sync failed: first settle the file back to `base` (I7). If
  // that fails too, the in-flight lock (*in_flight) is kept until the handle is closed.
  Status FailCommit(const View& base, const Status& cause, std::unique_ptr<FileLock>* in_flight);
  // After a failed rollback, keeps the writer lock's file lock until the handle is closed, so no
  // other writer builds on (and seals) a commit whose sync failed while this handle lives.
  void HoldWriterLockIfRollbackFailed(WriterLock* lock) EXCLUDES(failure_mutex_);
  Status CheckWritable() EXCLUDES(failure_mutex_);
  Status CheckNotFailed() EXCLUDES(failure_mutex_);  // Failed after an earlier write-path error
  // InvalidArgument in a child forked after this handle was opened (fork_generation.h).
  Status CheckNotForked() const;
  // True in a child forked after this handle was opened (CheckNotForked's test, without its
  // message: for the destructor, which must not allocate there).
  bool Forked() const noexcept;

  // Group commit (DB::Write): a Write waiting in the queue; the one at the front commits the
  // batches queued behind it too (CommitGroup) and hands each its status.
  struct PendingWrite {
    const WriteBatch* batch;
    Status status;
    bool done = false;
    std::condition_variable_any ready;  // done, or at the front of the queue (with write_queue_mutex_)
  };
  // Commits the batches of `group` (in order) as one write transaction; the status of all, or Ok
  // with each member's own status set when they were committed one by one (a limit together).
  Status CommitGroup(const std::vector<PendingWrite*>& group);
  Status CommitBatches(const std::vector<PendingWrite*>& group);  // one write transaction

  const Options& options() const { return options_; }
  Status ValidateKey(std::string_view key) const;
  Status ValidateValue(std::string_view value) const;


  // First: destroyed last, after every block the handle's members free (large_alloc.h).
  LargeBlocksUser large_blocks_user_;
  const std::string path_;
  const std::string lock_path_;
  const Options options_;
  const std::shared_ptr<FileSystem> fs_;

  // The queue of Writes (DB::Write); taken alone.
  Mutex write_queue_mutex_;
  std::deque<PendingWrite*> write_queue_ GUARDED_BY(write_queue_mutex_);

  std::mutex writer_mutex_;
  // Under writer_mutex_: the lock file, kept open for the writer lock and the change counter's
  // marks (AcquireWriter), and a mapping of its counter.
  std::unique_ptr<File> counter_file_;
  ChangeCounterView own_counter_;
  bool own_counter_tried_ = false;  // a mapping of counter_file_ was tried
  // Under writer_mutex_: what lets a writer skip looking at the file (change_counter.h). The odd
  // value this handle's last writer lock marked the counter with; where its last commit (its
  // AppendCommit's success, the last write of that lock) left the file; and, from AcquireWriter
  // to the first WriterView, that place if the counter still held the last mark's even value
  // when this lock was taken: then no writer has held the lock since, and the file, its name and
  // its newest commit are as this handle left them.
  // The file is named, not held: these outlive the writer lock, and a file a compaction replaced
  // must close once no view reads it, not at this handle's next write (its blocks stay allocated
  // while a descriptor or mapping is open). A file gone is no file this handle is in.
  struct LeftByThisHandle {
    std::weak_ptr<TreeFile> file;
    uint64_t end = 0;   // the commit's end (its seal's)
    uint64_t size = 0;  // the file's size: `end`, or past it by the zeros allocated ahead
    std::shared_ptr<TreeFile> Open() const { return file.lock(); }  // null once closed
    bool In(const std::shared_ptr<TreeFile>& other) const { return other != nullptr && Open() == other; }
  };
  // The fork generation this handle was opened in: a forked child shares its open file
  // descriptions (and their locks) with the parent, so CheckNotForked refuses it there.
  const uint64_t opened_generation_ = ForkGeneration();
  std::optional<uint64_t> last_mark_;
  std::optional<LeftByThisHandle> left_;
  std::optional<LeftByThisHandle> unchanged_since_left_;
  // Under the writer lock, from PrepareWriterView on (reset when the lock is taken and when the
  // file is cut): the writer's file, its newest commit's end and its size, which is that end or
  // past it by zeros a writer allocated ahead (AllocateAhead).
  std::optional<LeftByThisHandle> writer_at_;
  // Under the writer lock: the file system cannot allocate ahead (File::Allocate said so once).
  bool allocate_unsupported_ = false;
  // Under the writer lock: the end of the last commit record this handle knows to be durable in
  // the current file (0 if none), so a kSync writer syncs a base it did not sync itself.
  uint64_t durable_end_ = 0;
  // Files are told apart by their TreeFile, never by an inode number, which the filesystem may
  // give to a new file once the old one is gone.
  std::weak_ptr<TreeFile> durable_file_;  // the file durable_end_ is about
  // Under the writer lock: the file whose name this handle made durable (synced its directory).
  std::weak_ptr<TreeFile> name_durable_file_;
  // Where an automatic compaction of this file last failed (with any error, inline or in the
  // background, or when no thread could be started), at the file's end after the attempt
  // (BackOffCompaction); the next waits until the file has grown by the slack.
  mutable Mutex compaction_state_mutex_;
  std::weak_ptr<TreeFile> compaction_failed_file_ GUARDED_BY(compaction_state_mutex_);
  uint64_t compaction_failed_end_ GUARDED_BY(compaction_state_mutex_) = 0;
  // The background compaction (CompactsInBackground): its thread, whether it runs (set under the
  // writer lock as it starts, cleared as it ends), and the error it left for the next write
  // transaction. Waiters for its end wait on background_done_ with background_mutex_. The thread
  // and the condition variable are held through pointers so that a parent's handle destroyed in a
  // forked child can let go of both without a join or a destruction, which would wait there for
  // threads of the parent that the child does not have (StopBackgroundCompaction).
  // background_thread_ and background_done_ are under background_mutex_ too, but not annotated:
  // a handle destroyed in a forked child lets go of both without it (StopBackgroundCompaction).
  Mutex background_mutex_;
  std::unique_ptr<std::condition_variable_any> background_done_ = std::make_unique<std::condition_variable_any>();
  std::unique_ptr<std::thread> background_thread_;
  bool background_running_ GUARDED_BY(background_mutex_) = false;
  uint64_t background_installed_ GUARDED_BY(background_mutex_) = 0;  // files it installed, for writers waiting on the log
  // Writers that waited for the background compaction (BeginWrite), for GetStats.
  std::atomic<uint64_t> writer_stalls_{0};
  std::atomic<uint64_t> writer_stall_micros_{0};
  std::atomic<uint64_t> nodes_warmed_{0};  // by WarmCompacted, for GetStats
  Status background_error_ GUARDED_BY(background_mutex_);
  std::atomic<bool> closing_{false};
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

  mutable Mutex state_mutex_;
  std::shared_ptr<TreeFile> file_ GUARDED_BY(state_mutex_);
  std::optional<format::Commit> newest_ GUARDED_BY(state_mutex_);
  // The changes since newest_'s fold, through newest_ (null until caught up, or with no changes).
  std::shared_ptr<LogOverlay> overlay_ GUARDED_BY(state_mutex_);
  // Readers skip the fstat (change_counter.h): the counter's mapping, the value it had when this
  // handle last looked at the file with no writer at work (newest_ is the newest for as long as
  // the counter keeps it), and the file size at the last attempt to map the counter.
  ChangeCounterView counter_ GUARDED_BY(state_mutex_);
  std::optional<uint64_t> fresh_at_ GUARDED_BY(state_mutex_);
  uint64_t counter_tried_at_size_ GUARDED_BY(state_mutex_) = UINT64_MAX;
  // The gets and snapshots this handle made, and how many it had made when it last installed a
  // compacted file: the reads since, times the tree's height, are how many nodes the next
  // compaction verifies ahead in its new file (WarmCompacted). A handle that only writes warms
  // nothing. A hint, counted without a read-modify-write: reads racing on other threads may
  // count once between them, and an install never writes reads_, so a count racing with it
  // cannot bring back the reads before it (at most the reads in flight at the install count
  // after it).
  std::atomic<uint64_t> reads_{0};
  std::atomic<uint64_t> reads_at_install_{0};
  void CountRead() { reads_.store(reads_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }
  uint64_t ReadsSinceInstall() const {
    const uint64_t reads = reads_.load(std::memory_order_relaxed);
    const uint64_t at_install = reads_at_install_.load(std::memory_order_relaxed);
    return reads > at_install ? reads - at_install : 0;  // a lost count may leave reads_ behind
  }
  const bool upgrading_;

  std::atomic<bool> wrote_{false};  // a commit of this handle succeeded (checkpoint_on_close)
  std::atomic<bool> failed_{false};
  Mutex failure_mutex_;
  std::string failure_ GUARDED_BY(failure_mutex_);
  bool rollback_failed_ GUARDED_BY(failure_mutex_) = false;
  // Released in the reverse of the order they were taken: the in-flight lock first.
  std::unique_ptr<FileLock> held_writer_lock_ GUARDED_BY(failure_mutex_);
  std::unique_ptr<ChangeMark> held_change_mark_ GUARDED_BY(failure_mutex_);  // with it: the counter stays odd
  std::unique_ptr<FileLock> held_in_flight_ GUARDED_BY(failure_mutex_);
};

// Iterator adapters (iterators.cc).
// The view's keys in order: the fold's tree with the overlay's changes (at the view's commit) over it.
std::unique_ptr<Iterator> NewViewIterator(const View& view, TreeFile::NodeUse use = TreeFile::NodeUse::kSearch);
// `base` with a write transaction's own changes over it. `changes` must outlive the iterator.
std::unique_ptr<Iterator> NewChangesIterator(std::unique_ptr<Iterator> base, const Overlay* changes);
Result<std::vector<KeyValue>> ScanWith(Iterator& iterator, const ScanRange& range);

}  // namespace dbdb
