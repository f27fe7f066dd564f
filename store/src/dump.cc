// DumpFile: the record listing of `dbdb dump` (dbdb/dump.h), walked with the library's one
// RecordWalker (as check() walks), so the tool needs no internal header.
#include "dbdb/dump.h"

#include <ostream>

#include "format.h"
#include "node.h"
#include "record_walker.h"

namespace dbdb {

std::string EscapeBytes(std::string_view bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (char c : bytes) {
    auto u = static_cast<uint8_t>(c);
    if (u >= 0x20 && u < 0x7f && c != '\\') {
      out.push_back(c);
    } else {
      out += "\\x";
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

namespace {

// Prints verified records as `dbdb dump` shows them: a line per record, then a batch's changes,
// a leaf's entries or a branch's children.
class RecordPrinter {
 public:
  RecordPrinter(std::ostream& out, uint32_t version, bool show_values)
      : out_(out), version_(version), show_values_(show_values) {}

  void Print(uint64_t offset, const format::RecordView& record) {
    uint64_t length = record.payload.size() + format::kRecordOverheadBytes;
    out_ << format::RecordTypeName(record.type) << " offset " << offset << " length " << length;
    if (record.type == format::RecordType::kCommit) {
      Commit(offset, record);
    } else if (record.type == format::RecordType::kBatch || record.type == format::RecordType::kCheckpoint) {
      Batch(offset, record);
    } else if (record.type == format::RecordType::kSeal) {
      auto seal = format::DecodeSeal(record);
      out_ << ": seals the commit at " << seal.commit_offset
           << (seal.durable ? " (it is durable)" : " (written with it, not synced: no-sync mode)") << "\n";
    } else {
      Node(offset, record);
    }
  }

 private:
  std::string Show(std::string_view s) const { return show_values_ ? EscapeBytes(s) : std::to_string(s.size()) + " bytes"; }

  void Commit(uint64_t offset, const format::RecordView& record) {
    auto c = format::DecodeCommitPayload(offset, record.payload, version_);
    if (!c.ok()) return;  // not reached: the scan stopped before a commit that does not decode
    out_ << ": txn " << c->txn_id << ", prev " << c->prev_commit_offset << ", body [" << c->body_offset << ", "
         << offset << ") checksum " << std::hex << c->body_checksum << std::dec << ", synced_through "
         << c->synced_through << ", root " << c->root_offset << "+" << c->root_length << ", height "
         << c->tree_height << ", keys " << c->key_count << ", tree_bytes " << c->tree_bytes;
    if (version_ >= 2) {
      if (c->folded()) out_ << ", folds";
      else out_ << ", fold " << c->fold_offset;
      if (c->batch_offset != 0) out_ << ", batch " << c->batch_offset;
    }
    out_ << "\n";
  }

  void Batch(uint64_t offset, const format::RecordView& record) {
    auto batch = format::DecodeBatch(offset, record.payload);
    if (!batch.ok()) {
      out_ << ": " << batch.status().ToString() << "\n";
      return;
    }
    out_ << ": " << batch->size() << " changes\n";
    for (const auto& change : *batch) {
      if (change.value) out_ << "    put " << EscapeBytes(change.key) << " = " << Show(*change.value) << "\n";
      else out_ << "    del " << EscapeBytes(change.key) << "\n";
    }
  }

  void Node(uint64_t offset, const format::RecordView& record) {
    auto node = DecodeNode(offset, record.type, std::string(record.payload), version_);
    if (!node.ok()) {
      out_ << ": " << node.status().ToString() << "\n";
    } else if ((*node)->is_leaf) {
      out_ << ": " << (*node)->size() << " entries\n";
      for (size_t i = 0; i < (*node)->size(); i++) {
        out_ << "    " << EscapeBytes((*node)->keys[i]) << " = " << Show((*node)->values[i]) << "\n";
      }
    } else {
      out_ << ": " << (*node)->children.size() << " children\n";
      for (size_t i = 0; i < (*node)->children.size(); i++) {
        out_ << "    " << (i == 0 ? std::string("(first)") : ">= " + EscapeBytes((*node)->keys[i])) << " -> "
             << (*node)->children[i].offset << "+" << (*node)->children[i].length << "\n";
      }
    }
  }

  std::ostream& out_;
  uint32_t version_;
  bool show_values_;
};

// Prints every record a commit or a seal covers and returns where they end (the tail, if any,
// starts there). Nodes after the last commit or seal are part of the tail, so the scan verifies
// records up to the next commit or seal, then goes back and prints them (usually from the same
// window), holding no more than one record at a time.
Result<uint64_t> PrintCommittedRecords(RecordWalker& walker, uint32_t version, RecordPrinter& printer) {
  uint64_t committed_end = format::kFileHeaderSizeBytes;  // printed up to here
  uint64_t offset = committed_end;
  while (true) {
    DBDB_ASSIGN_OR_RETURN(auto record, walker.At(offset));
    if (!record) break;
    uint64_t end = offset + record->payload.size() + format::kRecordOverheadBytes;
    if (record->type == format::RecordType::kCommit &&
        !format::DecodeCommitPayload(offset, record->payload, version).ok()) {
      break;
    }
    if (record->type == format::RecordType::kCommit || record->type == format::RecordType::kSeal) {
      for (uint64_t at = committed_end; at < end;) {
        DBDB_ASSIGN_OR_RETURN(auto again, walker.At(at));
        if (!again) break;  // the file was cut meanwhile; the tail starts here
        printer.Print(at, *again);
        at += again->payload.size() + format::kRecordOverheadBytes;
        committed_end = at;
      }
      if (committed_end != end) break;
    }
    offset = end;
  }
  return committed_end;
}

}  // namespace

Status DumpFile(const std::string& path, const DumpOptions& options, std::ostream& out) {
  std::shared_ptr<FileSystem> fs = options.file_system ? options.file_system : NewPosixFileSystem();
  DBDB_ASSIGN_OR_RETURN(auto file, fs->Open(path, OpenOptions{.read_only = true}));
  DBDB_ASSIGN_OR_RETURN(uint64_t size, file->Size());
  RecordWalker walker(*file, size);
  DBDB_ASSIGN_OR_RETURN(std::string_view header_bytes, walker.Read(0, format::kFileHeaderSizeBytes));
  auto header = format::DecodeFileHeader(header_bytes);
  if (!header.ok()) return header.status().WithContext(path);
  out << "header  offset 0 length " << format::kFileHeaderSizeBytes << ": dbdb format " << header->version
      << ", generation " << header->generation << "\n";
  RecordPrinter printer(out, header->version, options.show_values);
  auto committed_end = PrintCommittedRecords(walker, header->version, printer);
  if (!committed_end.ok()) return committed_end.status().WithContext(path);
  // Zeros the next writer keeps are space allocated ahead of its commit, not a tail.
  DBDB_ASSIGN_OR_RETURN(uint64_t allocated, AllocatedAheadAfter(*file, *committed_end, walker.end()));
  const uint64_t written_end = walker.end() - allocated;
  if (*committed_end < written_end) {
    out << "tail    offset " << *committed_end << " length " << written_end - *committed_end
        << ": not covered by a valid commit (ignored by readers, truncated by the next writer)\n";
  }
  if (written_end < walker.end()) {
    out << "zeros   offset " << written_end << " length " << walker.end() - written_end
        << ": space allocated ahead of the next commit (written into by the next writer)\n";
  }
  return Status::Ok();
}

}  // namespace dbdb
