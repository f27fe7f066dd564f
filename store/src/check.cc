// Check: full verification of the newest commit's file. Every record of the committed region is
// read and verified in file order (framing, checksums, the commit chain), then the tree is walked
// from the newest root, bypassing the cache, checking every B+tree invariant.
#include <functional>

#include "db_impl.h"
#include "record_walker.h"

namespace dbdb {
namespace {

Status Bad(const std::string& why) { return Status::Corruption(why); }

// Walks the records of [header end, end) in order.
Status CheckRecords(TreeFile& file, const format::Commit& newest, CheckReport* report) {
  RecordWalker walker(file.file(), newest.end());
  uint64_t offset = format::kFileHeaderSizeBytes;
  std::optional<format::Commit> previous;
  uint64_t last_batch = 0;  // the offset of the batch record just walked, if the last record was one
  bool last_is_checkpoint = false;  // ... and it was a checkpoint record
  while (offset < newest.end()) {
    std::string why;
    DBDB_ASSIGN_OR_RETURN(auto walked, walker.At(offset, &why));
    if (!walked) return Bad(why + ", below the newest commit's end (" + std::to_string(newest.end()) + ")");
    const format::RecordView& record = *walked;
    const uint64_t length = record.payload.size() + format::kRecordOverheadBytes;
    uint64_t batch_before = last_batch;
    const bool checkpoint_before = last_is_checkpoint;
    last_batch = 0;
    last_is_checkpoint = false;
    if (record.type == format::RecordType::kBatch || record.type == format::RecordType::kCheckpoint) {
      DBDB_RETURN_IF_ERROR(format::DecodeBatch(offset, record.payload).status());
      last_batch = offset;
      last_is_checkpoint = record.type == format::RecordType::kCheckpoint;
    } else if (record.type == format::RecordType::kCommit) {
      DBDB_ASSIGN_OR_RETURN(auto commit, format::DecodeCommitPayload(offset, record.payload, file.version()));
      if (commit.batch_offset != batch_before) {
        return Bad("commit at offset " + std::to_string(offset) + " does not name the batch record before it");
      }
      // A commit that does not fold builds on its predecessor's fold.
      if (!commit.folded() && (!previous || commit.fold_offset != previous->fold_offset || !SameTree(commit, *previous))) {
        return Bad("commit at offset " + std::to_string(offset) + " names a fold its predecessor does not");
      }
      uint64_t expected_prev = previous ? previous->offset : 0;
      if (commit.prev_commit_offset != expected_prev) {
        return Bad("commit at offset " + std::to_string(offset) + " names the wrong previous commit");
      }
      // A checkpoint (a commit naming a checkpoint record) restates its predecessor's txn id
      // (CheckCheckpoints checks what it holds), and so does a close fold (a fold that names no
      // batch, after the file's first commit); no other commit does.
      const bool checkpoint = checkpoint_before && file.version() >= format::kCheckpointVersion && !commit.folded();
      const bool close_fold =
          previous && commit.folded() && commit.batch_offset == 0 && file.version() >= format::kCloseFoldVersion;
      const bool restates = checkpoint || close_fold;
      if (checkpoint_before != checkpoint || (checkpoint && !previous) ||
          (previous && commit.txn_id != previous->txn_id + (restates ? 0 : 1))) {
        return Bad("commit at offset " + std::to_string(offset) +
                   (checkpoint   ? " is a checkpoint that does not restate the txn id before it"
                    : close_fold ? " is a close fold (a fold with no batch) that does not restate the txn id before it"
                                 : " does not follow the txn id before it (or names a checkpoint it cannot be)"));
      }
      DBDB_RETURN_IF_ERROR(file.VerifyCommitBody(commit));
      previous = commit;
      report->commits++;
    } else if (record.type == format::RecordType::kSeal) {
      if (!previous || previous->record_end() != offset || !format::IsSealOf(record, *previous)) {
        return Bad("seal record at offset " + std::to_string(offset) + " does not follow the commit it names");
      }
    }
    report->records++;
    report->bytes_verified += length;
    offset += length;
  }
  if (!previous || previous->offset != newest.offset) {
    return Bad("the record walk did not end on the newest commit");
  }
  return Status::Ok();
}

// Every checkpoint since the newest commit's fold holds exactly what replaying the batches before
// it gives: each key's newest change since the fold (what a reader opening there trusts).
Status CheckCheckpoints(TreeFile& file, const format::Commit& newest) {
  if (newest.folded() || file.version() < format::kCheckpointVersion) return Status::Ok();
  std::vector<format::Commit> chain{newest};
  while (chain.back().prev_commit_offset != newest.fold_offset) {
    // CheckRecords walked the chain: every commit names the one before it, back to the fold.
    DBDB_ASSIGN_OR_RETURN(format::Commit prev, file.ReadCommit(chain.back().prev_commit_offset));
    chain.push_back(prev);
  }
  DBDB_ASSIGN_OR_RETURN(format::Commit fold, file.ReadCommit(newest.fold_offset));
  LogOverlay replayed(fold.offset, fold.txn_id);
  ReadBytes buffer;
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const bool checkpoint = it->txn_id == replayed.through_txn_id();
    DBDB_ASSIGN_OR_RETURN(auto batch, file.ReadBatch(*it, &buffer, checkpoint));
    if (!checkpoint) {
      replayed.Apply(it->offset, it->txn_id, batch, LogRecordBytes(*it));
      continue;
    }
    const LogOverlay::Latest expected = replayed.LatestChanges(it->txn_id);
    bool same = expected.size() == batch.size();
    auto e = expected.begin();
    for (size_t i = 0; same && i < batch.size(); i++, ++e) {
      same = e->first == batch[i].key && e->second.has_value() == batch[i].value.has_value() &&
             (!e->second || *e->second == *batch[i].value);
    }
    if (!same) {
      return Bad("checkpoint at offset " + std::to_string(it->offset) + " does not hold the " +
                 std::to_string(expected.size()) + " changes the commits before it replay to");
    }
    replayed.Restate(it->offset, LogRecordBytes(*it));
  }
  return Status::Ok();
}

struct TreeCheck {
  TreeFile& file;
  CheckReport* report;
  uint64_t tree_bytes = 0;

  // Keys of the subtree must lie in [lower, upper); no bound when null.
  Status Walk(NodeRef ref, uint32_t height, const std::string* lower, const std::string* upper, bool is_root) {
    DBDB_ASSIGN_OR_RETURN(auto node, file.ReadNodeUncached(ref));
    std::string where = "node at offset " + std::to_string(ref.offset);
    if (node->is_leaf != (height == 1)) return Bad(where + ": leaves are not all at the same depth");
    report->nodes++;
    tree_bytes += ref.length;
    if (node->is_leaf) {
      if (node->size() == 0) return Bad(where + ": empty leaf");
      if ((lower && node->keys.front() < *lower) || (upper && node->keys.back() >= *upper)) {
        return Bad(where + ": a key lies outside the range its parent gives it");
      }
      report->keys += node->size();
      return Status::Ok();
    }
    if (node->children.size() < 2 && is_root) return Bad(where + ": root with a single child");
    for (size_t i = 0; i < node->children.size(); i++) {
      std::string child_lower, child_upper;
      const std::string* lo = lower;
      const std::string* hi = upper;
      if (i > 0) {
        child_lower = std::string(node->keys[i]);
        if ((lower && child_lower < *lower) || (upper && child_lower >= *upper)) {
          return Bad(where + ": a separator lies outside the range its parent gives it");
        }
        lo = &child_lower;
      }
      if (i + 1 < node->children.size()) {
        child_upper = std::string(node->keys[i + 1]);
        hi = &child_upper;
      }
      DBDB_RETURN_IF_ERROR(Walk(node->children[i], height - 1, lo, hi, false));
    }
    return Status::Ok();
  }
};

}  // namespace

static Result<uint64_t> CountKeys(const View& view) {
  uint64_t keys = view.commit ? view.commit->key_count : 0;
  if (!view.overlay) return keys;
  // The tree's keys, plus the overlay's puts of new keys, minus its deletes of the tree's keys.
  std::string tree_value;  // read only to learn whether the tree holds the key; reused
  for (const auto& [key, value] : view.overlay->LatestChanges(view.txn_id())) {
    DBDB_ASSIGN_OR_RETURN(bool in_tree, TreeGet(*view.file, view.root(), key, &tree_value));
    if (value && !in_tree) keys++;
    if (!value && in_tree) keys--;
  }
  return keys;
}

Result<CheckReport> DBImpl::Check() {
  DBDB_ASSIGN_OR_RETURN(View view, ReaderView());
  CheckReport report;
  DBDB_ASSIGN_OR_RETURN(uint64_t size, view.file->file().Size());
  DBDB_ASSIGN_OR_RETURN(report.allocated_bytes, AllocatedAheadAfter(view.file->file(), view.end(), size));
  report.tail_bytes = size > view.end() ? size - view.end() - report.allocated_bytes : 0;
  report.bytes_verified = format::kFileHeaderSizeBytes;
  if (!view.commit) return report;
  const format::Commit& newest = *view.commit;
  DBDB_RETURN_IF_ERROR(CheckRecords(*view.file, newest, &report));
  DBDB_RETURN_IF_ERROR(CheckCheckpoints(*view.file, newest));
  report.tree_height = newest.tree_height;
  TreeCheck tree{*view.file, &report};
  if (newest.tree_height > 0) {
    DBDB_RETURN_IF_ERROR(tree.Walk(RootOf(newest).ref, newest.tree_height, nullptr, nullptr, true));
  }
  if (report.keys != newest.key_count) {
    return Bad("the tree holds " + std::to_string(report.keys) + " keys, the commit says " +
               std::to_string(newest.key_count));
  }
  DBDB_ASSIGN_OR_RETURN(report.keys, CountKeys(view));
  if (tree.tree_bytes != newest.tree_bytes) {
    return Bad("the tree takes " + std::to_string(tree.tree_bytes) + " bytes, the commit says " +
               std::to_string(newest.tree_bytes));
  }
  if (report.commits != newest.commits_in_file) {
    return Bad("the file holds " + std::to_string(report.commits) + " commits, the newest says " +
               std::to_string(newest.commits_in_file));
  }
  return report;
}

Result<Stats> DBImpl::GetStats() {
  DBDB_ASSIGN_OR_RETURN(View view, ReaderView());
  Stats stats;
  DBDB_ASSIGN_OR_RETURN(stats.file_size_bytes, view.file->file().Size());
  DBDB_ASSIGN_OR_RETURN(stats.allocated_bytes, AllocatedAheadAfter(view.file->file(), view.end(), stats.file_size_bytes));
  stats.generation = view.file->header().generation;
  stats.live_bytes = view.live_bytes();
  if (view.commit) {
    DBDB_ASSIGN_OR_RETURN(stats.keys, CountKeys(view));
    stats.unfolded_bytes = view.log_bytes();
    stats.txn_id = view.commit->txn_id;
    stats.commits_in_file = view.commit->commits_in_file;
    stats.tree_height = view.commit->tree_height;
  }
  const uint64_t used = stats.file_size_bytes - stats.allocated_bytes;
  stats.garbage_ratio = used == 0 ? 0.0 : 1.0 - static_cast<double>(stats.live_bytes) / static_cast<double>(used);
  if (stats.garbage_ratio < 0) stats.garbage_ratio = 0;
  stats.writer_stalls = writer_stalls_.load(std::memory_order_relaxed);
  stats.writer_stall_micros = writer_stall_micros_.load(std::memory_order_relaxed);
  stats.background_compactions = BackgroundInstalled();
  stats.nodes_verified = view.file->verified_count();
  stats.nodes_warmed = nodes_warmed_.load(std::memory_order_relaxed);
  return stats;
}

}  // namespace dbdb
