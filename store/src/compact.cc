// Compaction (I8): the newest commit is rewritten, packed, into "<path>.compact", which is synced,
// renamed over the database and made durable with a directory sync, all under the writer lock.
// Readers keep reading the old file (their snapshots hold it open); other handles notice the new
// file by its identity and follow it. A crash at any step leaves the old file or the new one
// under the name, both holding the same newest commit.
#include "checksum.h"
#include "db_impl.h"

namespace dbdb {

Status DBImpl::Compact() {
  DBDB_ASSIGN_OR_RETURN(WriterLock lock, AcquireWriter());
  DBDB_ASSIGN_OR_RETURN(View view, PrepareWriterView(false));
  if (!view.commit) return Status::Ok();  // nothing committed, nothing to compact
  return CompactLocked(view).status();
}

Result<format::Commit> DBImpl::WriteCompactedFile(const View& view, const std::string& temp) {
  // Any error before the rename leaves the database untouched: report it, keep the handle.
  DBDB_ASSIGN_OR_RETURN(auto out, fs_->Open(temp, OpenOptions{.create = true}));
  auto written = WriteCompactedInto(view, *out);
  // A partial file gives its space back (a full disk must not stay full) but keeps its name and
  // inode: removing it would let the next compaction create a new file under that name, and a
  // power cut that kept the rename but not the create would rename this partial file over the
  // database (found by `dbdb-crash --processes 3`; mutant 35).
  if (!written.ok()) (void)out->Truncate(0);
  return written;
}

Result<format::Commit> DBImpl::WriteCompactedInto(const View& view, File& out) {
  const format::Commit& old = *view.commit;
  format::Commit commit;
  DBDB_RETURN_IF_ERROR(out.Truncate(0));
  format::FileHeader header = view.file->header();
  header.version = format::kFormatVersion;  // compaction is also how a version-1 file is upgraded
  header.generation++;
  DBDB_RETURN_IF_ERROR(out.WriteAt(0, format::EncodeFileHeader(header)));
  BodyHasher body_hash(format::kFileHeaderSizeBytes);
  uint64_t write_offset = format::kFileHeaderSizeBytes;
  BulkLoader loader(format::kFileHeaderSizeBytes, options_.node_size_target_bytes,
                    [&](std::string_view bytes) -> Status {
                      body_hash.Update(bytes);
                      Status s = out.WriteAt(write_offset, std::span<const char>(bytes.data(), bytes.size()));
                      write_offset += bytes.size();
                      return s;
                    });
  // The view's keys: the fold's tree with the unfolded log over it, so compaction also folds.
  auto it = NewViewIterator(view);
  DBDB_RETURN_IF_ERROR(it->SeekToFirst());
  while (it->Valid()) {
    DBDB_RETURN_IF_ERROR(loader.Add(it->key(), it->value()));
    DBDB_RETURN_IF_ERROR(it->Next());
  }
  DBDB_ASSIGN_OR_RETURN(TreeRoot root, loader.Finish());
  if (view.log_bytes() == 0 && root.key_count != old.key_count) {
    return Status::Corruption("compaction copied " + std::to_string(root.key_count) + " keys, the commit holds " +
                              std::to_string(old.key_count));
  }
  commit.offset = write_offset;
  commit.txn_id = old.txn_id;  // the same state as the newest commit, so the same id
  commit.body_offset = format::kFileHeaderSizeBytes;
  commit.body_checksum = body_hash.Digest();
  commit.synced_through = format::kFileHeaderSizeBytes;
  SetRoot(&commit, root);
  commit.commits_in_file = 1;
  commit.fold_offset = commit.offset;  // a fold: nothing to replay
  commit.sealed = true;
  std::string record;
  AppendCommitRecord(&record, commit);
  // Synced with the file below, before its name exists: the seal proves the commit durable.
  format::AppendSeal(&record, commit, true);
  commit.seal_durable = true;
  DBDB_RETURN_IF_ERROR(out.WriteAt(commit.offset, record));
  DBDB_RETURN_IF_ERROR(out.Sync());  // the new file is durable before its name is
  return commit;
}

Result<View> DBImpl::CompactLocked(const View& view) {
  const std::string temp = path_ + ".compact";
  auto written = WriteCompactedFile(view, temp);
  if (!written.ok()) return written.status();  // the database is untouched
  const format::Commit commit = written.value();
  // A failed rename may still have happened (or happen at the next crash): this handle must not
  // go on appending to a file that may no longer have the name. Fail it (I7); a new handle finds
  // whichever file the name holds, both with the same newest commit.
  Status renamed = fs_->Rename(temp, path_);
  if (!renamed.ok()) return Fail(renamed.WithContext("renaming the compacted file over " + path_));
  // Until the directory is synced the rename may be lost in a crash; commits appended to the new
  // file before that could vanish with it. A failure here fails the handle (I7).
  Status s = fs_->SyncDir(DirName(path_));
  if (!s.ok()) return Fail(s.WithContext("syncing the directory after compacting " + path_));
  auto file = TreeFile::Open(*fs_, path_, false, options_.node_cache_bytes);
  if (!file.ok()) return Fail(file.status().WithContext("reopening " + path_ + " after compaction"));
  View compacted;
  {
    MutexLock guard(&state_mutex_);
    file_ = file.value();
    newest_ = commit;
    overlay_ = std::make_shared<LogOverlay>(commit.offset, commit.txn_id);
    compacted = CurrentView();
  }
  SetDurable(compacted, commit.record_end());
  name_durable_file_ = file.value();
  return compacted;
}

}  // namespace dbdb
