// TreeFile: one open dbdb file, read through checksums (I5). It reads verified records and
// nodes (with a node cache) and finds the newest valid commit by scanning backward from the end
// of the file, so opening never reads the whole file (docs/FORMAT.md, "Finding the newest commit").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <algorithm>
#include <atomic>
#include <mutex>
#include <unordered_map>
#include <vector>
#include <string>

#include "dbdb/file_system.h"
#include "format.h"
#include "node.h"
#include "node_cache.h"
#include "read_bytes.h"
#include "verified_nodes.h"

namespace dbdb {

class TreeFile {
 public:
  // Opens an existing dbdb file and verifies its header.
  // With `map_reads`, a version-3 (or later) file's nodes are read in place through a read-only mapping of
  // the file (when the file system maps files), each verified once by this TreeFile before its
  // first use; else (and for older versions) read, verified and decoded into the node cache.
  static Result<std::shared_ptr<TreeFile>> Open(FileSystem& fs, const std::string& path,
                                                bool read_only, uint64_t cache_bytes, bool map_reads);

  File& file() { return *file_; }
  uint64_t identity() const { return identity_; }
  const format::FileHeader& header() const { return header_; }
  const std::string& path() const { return path_; }

  // Reads and verifies the record [offset, offset + length).
  Result<format::RecordView> ReadRecord(uint64_t offset, uint64_t length, std::string* buffer);

  // A verified, decoded node (from the cache when there), for the tree's writer.
  Result<std::shared_ptr<const Node>> ReadNode(NodeRef ref);
  // A verified node to search in place, for the tree's readers: through the mapping (verified
  // once), or in memory the handle owns (a cached decoded node, or a one-pass read's copy). Read a
  // view that lies in the mapping only inside ReadMapped (map_guard.h): a mapped page the disk
  // cannot deliver raises SIGBUS. One in owned memory is read as any memory.
  struct NodeHandle {
    NodeView view;
    // Null when the view lies in the mapping (alive with this TreeFile); else what holds its bytes.
    std::shared_ptr<const void> owner;
  };
  // kOnePass: a pass that reads each node once (compaction's walk of the whole tree) verifies the
  // node every time, without asking or filling the verified-node table or the node cache: a
  // table or cache filled with every node of a tree helps no later read of its own and costs a
  // page fault for each of the table's pages it touches first (a profile of a 1M-key fill had
  // those faults at a tenth of the compaction thread's time). Through a mapping, it copies the
  // record out first (one guarded copy) and verifies and views the copy, so that its reader
  // reads each entry as plain memory, without a guarded read and a copy per entry.
  enum class NodeUse { kSearch, kOnePass };
  Result<NodeHandle> ReadNodeView(NodeRef ref, NodeUse use = NodeUse::kSearch);
  // The fast path of a search, for a descent that runs whole under one ReadMapped (TreeGet): the
  // mapping reads go through now, or null (none yet, a fault dropped it, or the file is read
  // without one).
  const FileMapping* CurrentMapping() const {
    return map_reads_ ? mapping_.load(std::memory_order_acquire) : nullptr;
  }
  // The node at `ref` in `mapping` if this process verified it there already (the same offset,
  // length, mapping and epoch: ReadNodeView checked all of it then); else nullopt, and the caller
  // asks ReadNodeView, which verifies or reports. Reads only the verified-node table: allocates
  // nothing, takes no lock, reports nothing, so it may run under ReadMapped.
  std::optional<NodeView> VerifiedMappedNode(NodeRef ref, const FileMapping* mapping) const;
  // A hint that ReadNodeView(ref) comes soon (a scan's next leaf): fetches into the CPU cache the
  // node's first bytes, if mapped, and the verified-node table's line for it. Reads nothing and
  // never faults (a prefetch does not).
  void Prefetch(NodeRef ref, NodeUse use = NodeUse::kSearch) const;  // kOnePass: not the table's line
  // Verifies the nodes of the tree of `height` under `root` through this file's mapping, level by
  // level from the root, as their first reads would (I5), so that the verified-node table holds
  // them and the mapping's pages are mapped in: at most `max_nodes` and half the table's capacity
  // (the upper levels first), and none without a mapping. Stops early, Ok, once `stop` is set.
  // Returns the nodes verified. Corruption or IOError as ReadNodeView reports them (or mapping
  // the root does), with *failed the node whose read failed; Corruption for a node of the wrong
  // kind for its level, with *failed left null (offset 0: the node read and verified).
  Result<uint64_t> WarmTree(NodeRef root, uint32_t height, uint64_t max_nodes, const std::atomic<bool>& stop,
                            NodeRef* failed);
  // How many nodes have been verified and entered in this TreeFile's verified-node table, by its
  // reads or its WarmTree (a node verified again in a newer mapping counts twice; the nodes of a
  // table AdoptMappings took over count in the TreeFile that verified them, not here).
  uint64_t verified_count() const { return verified_.inserted(); }
  // Takes over the mappings and the verified-node table of `warmed`, the same file (the same
  // identity) opened under another name: the compacted file opened under its temporary name and
  // warmed (WarmTree) before it was renamed over the database. What `warmed` verified through
  // those mappings counts as verified here: the mapped bytes are the file's whatever its name, and
  // no write lands below a tree once it is synced. False, and nothing taken, if the identities
  // differ or this TreeFile has mapped the file already. REQUIRES: no other thread uses either.
  bool AdoptMappings(TreeFile& warmed);
  // The IOError for a read of the node at `offset` that ReadMapped abandoned; the next read maps
  // the file anew.
  Status MapFault(uint64_t offset);
  // The same, always from the file, bypassing the cache (for check()).
  Result<std::shared_ptr<const Node>> ReadNodeUncached(NodeRef ref);

  uint32_t version() const { return header_.version; }
  uint64_t commit_record_size() const { return format::CommitRecordSize(header_.version); }

  // The verified commit record at `offset` (its body is not checked).
  Result<format::Commit> ReadCommit(uint64_t offset);

  // The verified batch record of `commit` (none: an empty list), decoded into views of *buffer.
  // `checkpoint`: the commit restates its predecessor's txn id, so its batch must be a checkpoint
  // record (and otherwise a batch record): Corruption when the record says otherwise.
  // When the commit is the one whose body the last successful VerifyCommitChain kept (below), the
  // record is those bytes, taken without reading or hashing them again: the body checksum that
  // matched them covers every byte of the record (its own checksum included), so only its header
  // is checked.
  Result<std::vector<format::BatchChange>> ReadBatch(const format::Commit& commit, ReadBytes* buffer,
                                                     bool checkpoint = false);
  // ReadBatch of a checkpoint, decoded into an array of large blocks (for the overlay that keeps it).
  Result<format::LargeBatchChanges> ReadCheckpoint(const format::Commit& commit, ReadBytes* buffer);

  // Ok if the bytes of the commit's body match its body checksum. With `kept`, a body that is
  // the commit's batch record (after the base's seal) and at most kKeptBodyBytesMax is read in one
  // piece and, if it matches, left in *kept (else *kept is left empty).
  Status VerifyCommitBody(const format::Commit& commit, ReadBytes* kept = nullptr);
  static constexpr uint64_t kKeptBodyBytesMax = uint64_t{16} << 20;
  // Lets go of a kept body nobody took (a file the handle no longer reads from): returns its
  // bytes (empty if none), for the caller to free where it likes (after its locks).
  ReadBytes DropKeptBody();
  // True if the commit's body is its batch record (after its base's seal, if the base was sealed).
  static bool BodyIsBatch(const format::Commit& commit);

  // True for the first commit of a compacted file (generation 1 or more, version 2 or later, no
  // batch): the tree a compaction wrote into PATH.compacting, truncated to nothing first, and
  // synced (truncate and tree together) before the file got its name. Its body (every node, the
  // whole file at that point) is not hashed when the commit is found, so that opening, or a
  // reader following a compaction, costs no pass over the file: no crash can leave it torn or
  // leave an abandoned attempt's nodes under it, nothing writes below its end afterwards (a
  // rollback never cuts below its base; settling treats it as proven), and each node is verified
  // before its first use (I5). check() still hashes it.
  bool IsCompactedTree(const format::Commit& commit) const;
  // True for a close fold (format::kCloseFoldVersion or later: a fold after the file's first
  // commit that names no batch) whose seal says durable. Its body (the fold's nodes, the whole
  // tree's worth after a large log) is not hashed when the commit is found either: its writer's
  // sync returned before that seal was written, so no crash leaves it torn under the seal; a
  // durable seal is proof that is never fallen back past (FindNewestCommit, I9), so the hash could
  // only turn damage into Corruption at open, which the node's own check does at its first use
  // (I5). check() still hashes it. An unsealed one, or one sealed in no-sync mode, is hashed.
  bool IsDurableCloseFold(const format::Commit& commit);

  // Ok if the commit's body and, back to the last sync point it names (or to the commit at
  // `verified_commit`, which this handle verified with its chain already; 0: none), its
  // predecessors' bodies match their checksums (a compacted tree's body excepted, above);
  // Corruption if not; IOError if unreadable.
  Status VerifyCommitChain(const format::Commit& commit, uint64_t verified_commit = 0);

  // The newest commit starting at or after `floor` whose record and chain verify, in a file of
  // `size` bytes, with `sealed` set if its seal follows it; nullopt if there is none. `floor` is
  // the end of the commit at `verified_commit` (which this handle verified), or the header's end. Corruption if a durable
  // seal above the commit found names a commit that does not verify (I9: never fall back past a
  // commit proven durable). I/O errors are returned, never skipped.
  Result<std::optional<format::Commit>> FindNewestCommit(uint64_t size, uint64_t floor, uint64_t verified_commit = 0);

  // Sets commit->sealed and seal_durable from the bytes at its record's end (in a file of `size`).
  Status ReadSeal(format::Commit* commit, uint64_t size);

 private:
  TreeFile(std::unique_ptr<File> file, std::string path, uint64_t identity,
           format::FileHeader header, uint64_t cache_bytes, bool map_reads)
      : file_(std::move(file)), path_(std::move(path)), identity_(identity), header_(header),
        cache_(cache_bytes), map_reads_(map_reads && header.version >= kSlottedNodeVersion),
        verified_(map_reads_ ? cache_bytes : 0) {}
  // The mapping holding [0, end), mapping the file anew (larger) when the current one is shorter;
  // null if the file system does not map files.
  Result<const FileMapping*> MappingCovering(uint64_t end);
  // ReadNodeView's kOnePass through `mapping` (which covers ref, its length checked): the record
  // copied out, verified and viewed in the copy, which the handle owns.
  Result<NodeHandle> ReadNodeCopy(NodeRef ref, const FileMapping* mapping);
  // Calls visit(offset) for each offset in [floor, top_end) where `prefix` starts, highest first,
  // until visit returns false.
  Status ScanBackward(uint64_t top_end, uint64_t floor, const std::string& prefix,
                      const std::function<Result<bool>(uint64_t)>& visit);
  // *skipped: a candidate above the commit found did not verify. *above: where the bytes scanned
  // above the commit found end (0 if none were).
  Result<std::optional<format::Commit>> ScanForNewestCommit(uint64_t size, uint64_t floor, uint64_t verified_commit,
                                                            bool* skipped, uint64_t* above);
  // The commit at `offset` if its record and chain verify (nullopt if not), with its seal read.
  Result<std::optional<format::Commit>> VerifiedCommitAt(uint64_t offset, uint64_t size, uint64_t verified_commit);
  // The offset of a commit at or above `above` that a durable seal in [above, size) names.
  Result<std::optional<uint64_t>> DurableSealAbove(uint64_t above, uint64_t size);
  Status ReadInto(uint64_t offset, std::span<char> dst);  // all of dst, or Corruption
  // The verified batch record's payload for ReadBatch (nullopt: the commit has none), in *buffer.
  Result<std::optional<std::string_view>> ReadBatchPayload(const format::Commit& commit, ReadBytes* buffer,
                                                           bool checkpoint);
  Status ReadExactly(uint64_t offset, uint64_t length, std::string* buffer);
  Status ReadExactly(uint64_t offset, uint64_t length, ReadBytes* buffer);
  // The body VerifyCommitChain verified last for its newest commit, if ReadBatch may take it: the
  // commit's offset and body checksum name it (a commit rolled back and replaced at the same
  // offset has another checksum, or the same bytes).
  struct KeptBody {
    uint64_t commit_offset = 0;
    uint64_t body_checksum = 0;
    ReadBytes bytes;
  };
  std::optional<ReadBytes> TakeKeptBody(const format::Commit& commit);

  std::unique_ptr<File> file_;
  std::string path_;
  uint64_t identity_;
  format::FileHeader header_;
  NodeCache cache_;

  // Reads through mappings (map_reads_): every mapping made stays until this TreeFile is
  // destroyed, so a view into an older, shorter one stays valid while a reader uses it.
  const bool map_reads_;
  std::mutex map_mutex_;
  std::vector<std::shared_ptr<const FileMapping>> mappings_;  // guarded by map_mutex_
  std::atomic<const FileMapping*> mapping_{nullptr};          // the newest (largest)
  std::atomic<bool> unmappable_{false};                       // read with ReadAt from now on
  static constexpr size_t kMappingsMax = 16;                  // then unmappable_
  // The nodes verified in a mapping, so each is checked once per mapping (a new, larger mapping
  // of the file verifies again what it reads: cheap, since it is made only when the file has
  // doubled, and it never trusts bytes it did not check itself). Its table is mapped with the
  // first mapping of the file (verified_nodes.h).
  VerifiedNodes verified_;

  std::mutex kept_mutex_;
  std::optional<KeptBody> kept_;  // guarded by kept_mutex_
};

}  // namespace dbdb
