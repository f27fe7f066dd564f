// Iterators over a snapshot's tree, and over a write transaction's view (its own changes merged
// over the tree it started from), plus range and prefix scans on top of either.
#include <cassert>

#include "db_impl.h"

namespace dbdb {
namespace {

class TreeIteratorAdapter final : public Iterator {
 public:
  TreeIteratorAdapter(std::shared_ptr<TreeFile> file, TreeRoot root) : it_(std::move(file), root) {}
  Status SeekToFirst() override { return Check(it_.SeekToFirst()); }
  Status Seek(std::string_view key) override { return Check(it_.Seek(key)); }
  Status Next() override { return Check(it_.Next()); }
  bool Valid() const override { return ok_ && it_.Valid(); }
  std::string_view key() const override { return it_.key(); }
  std::string_view value() const override { return it_.value(); }

 private:
  Status Check(Status s) {
    ok_ = s.ok();
    return s;
  }
  TreeIterator it_;
  bool ok_ = true;
};

// The transaction's own changes win over the base tree; deletions hide base keys.
class MergedIterator final : public Iterator {
 public:
  MergedIterator(std::shared_ptr<TreeFile> file, TreeRoot root, const Overlay* overlay)
      : base_(std::move(file), root), overlay_(overlay), position_(overlay->end()) {}

  Status SeekToFirst() override {
    position_ = overlay_->begin();
    return Settle(base_.SeekToFirst());
  }
  Status Seek(std::string_view key) override {
    position_ = overlay_->lower_bound(key);
    return Settle(base_.Seek(key));
  }
  Status Next() override {
    assert(Valid());
    if (on_overlay_) {
      ++position_;
      return Settle(Status::Ok());
    }
    return Settle(base_.Next());
  }
  bool Valid() const override { return valid_; }
  std::string_view key() const override { return on_overlay_ ? std::string_view(position_->first) : base_.key(); }
  std::string_view value() const override {
    return on_overlay_ ? std::string_view(*position_->second) : base_.value();
  }

 private:
  Status Settle(Status s) {
    valid_ = false;
    while (s.ok()) {
      bool has_base = base_.Valid();
      bool has_overlay = position_ != overlay_->end();
      if (!has_base && !has_overlay) return s;
      if (has_overlay && (!has_base || position_->first <= base_.key())) {
        if (has_base && position_->first == base_.key()) {
          s = base_.Next();  // shadowed by the transaction's change
          if (!s.ok()) break;
        }
        if (position_->second.has_value()) {
          on_overlay_ = true;
          valid_ = true;
          return s;
        }
        ++position_;  // a deletion
        continue;
      }
      on_overlay_ = false;
      valid_ = true;
      return s;
    }
    return s;
  }

  TreeIterator base_;
  const Overlay* overlay_;
  Overlay::const_iterator position_;
  bool on_overlay_ = false;
  bool valid_ = false;
};

}  // namespace

std::unique_ptr<Iterator> NewTreeIterator(std::shared_ptr<TreeFile> file, TreeRoot root) {
  return std::make_unique<TreeIteratorAdapter>(std::move(file), root);
}

std::unique_ptr<Iterator> NewMergedIterator(std::shared_ptr<TreeFile> file, TreeRoot root, const Overlay* overlay) {
  return std::make_unique<MergedIterator>(std::move(file), root, overlay);
}

Result<std::vector<KeyValue>> ScanWith(Iterator& iterator, const ScanRange& range) {
  std::vector<KeyValue> out;
  DBDB_RETURN_IF_ERROR(iterator.Seek(range.begin));
  while (iterator.Valid() && out.size() < range.limit) {
    if (range.end && iterator.key() >= *range.end) break;
    out.push_back(KeyValue{std::string(iterator.key()), std::string(iterator.value())});
    DBDB_RETURN_IF_ERROR(iterator.Next());
  }
  return out;
}

ScanRange ScanRange::Prefix(std::string_view prefix) {
  ScanRange range;
  range.begin = std::string(prefix);
  // The smallest key greater than every key with this prefix: drop trailing 0xff bytes, then
  // increment the last byte. A prefix of only 0xff bytes (or empty) has no upper bound.
  std::string end(prefix);
  while (!end.empty() && static_cast<uint8_t>(end.back()) == 0xff) end.pop_back();
  if (!end.empty()) {
    end.back() = static_cast<char>(static_cast<uint8_t>(end.back()) + 1);
    range.end = std::move(end);
  }
  return range;
}

}  // namespace dbdb
