// Iterators over a view (the fold's tree with the overlay's changes merged over it) and over a
// write transaction (its own changes merged over its base view), plus range and prefix scans.
#include <cassert>

#include "db_impl.h"

namespace dbdb {
namespace {

class TreeIteratorAdapter final : public Iterator {
 public:
  TreeIteratorAdapter(std::shared_ptr<TreeFile> file, TreeRoot root, TreeFile::NodeUse use)
      : it_(std::move(file), root, use) {}
  Status SeekToFirst() override { return Check(it_.SeekToFirst()); }
  Status Seek(std::string_view key) override { return Check(it_.Seek(key)); }
  Status Next() override { return Check(it_.Next()); }
  bool Valid() const override { return status_.ok() && it_.Valid(); }
  Status status() const override { return status_; }
  std::string_view key() const override { return it_.key(); }
  std::string_view value() const override { return it_.value(); }

 private:
  Status Check(Status s) {
    status_ = s;
    return s;
  }
  TreeIterator it_;
  Status status_;
};

// Ordered changes (puts and deletes) to merge over a base iterator.
class ChangeCursor {
 public:
  virtual ~ChangeCursor() = default;
  virtual void Seek(std::string_view key) = 0;  // the first change at or after key
  virtual void Next() = 0;                      // REQUIRES: Valid()
  virtual bool Valid() const = 0;
  virtual std::string_view key() const = 0;                   // REQUIRES: Valid(); valid until the next move
  virtual std::optional<std::string_view> value() const = 0;  // nullopt: a delete; valid as key()
};

// A write transaction's own changes.
class MapCursor final : public ChangeCursor {
 public:
  explicit MapCursor(const Overlay* changes) : changes_(changes), position_(changes->end()) {}
  void Seek(std::string_view key) override { position_ = changes_->lower_bound(key); }
  void Next() override { ++position_; }
  bool Valid() const override { return position_ != changes_->end(); }
  std::string_view key() const override { return position_->first; }
  std::optional<std::string_view> value() const override {
    if (!position_->second) return std::nullopt;
    return std::string_view(*position_->second);
  }

 private:
  const Overlay* changes_;
  Overlay::const_iterator position_;
};

// The overlay's changes as of one commit: views of the current change in the overlay's memory,
// which the cursor keeps alive. Each step goes on from where the last one stopped
// (LogOverlay::Position), or looks the next key up if the overlay gained a key meanwhile (it may
// grow: later versions are not seen).
class LogCursor final : public ChangeCursor {
 public:
  LogCursor(std::shared_ptr<const LogOverlay> overlay, uint64_t txn_id) : overlay_(std::move(overlay)), txn_id_(txn_id) {}
  void Seek(std::string_view key) override { valid_ = overlay_->Seek(key, true, txn_id_, &key_, &value_, &position_); }
  void Next() override { valid_ = overlay_->Next(txn_id_, &key_, &value_, &position_); }
  bool Valid() const override { return valid_; }
  std::string_view key() const override { return key_; }
  std::optional<std::string_view> value() const override { return value_; }

 private:
  std::shared_ptr<const LogOverlay> overlay_;
  uint64_t txn_id_;
  LogOverlay::Position position_;
  bool valid_ = false;
  std::string_view key_;
  std::optional<std::string_view> value_;
};

// The changes win over the base; deletions hide base keys.
class MergedIterator final : public Iterator {
 public:
  MergedIterator(std::unique_ptr<Iterator> base, std::unique_ptr<ChangeCursor> changes)
      : base_(std::move(base)), changes_(std::move(changes)) {}

  Status SeekToFirst() override {
    changes_->Seek(std::string_view());
    return Settle(base_->SeekToFirst());
  }
  Status Seek(std::string_view key) override {
    // The changes first, the base last: `key` may be this iterator's own key(), a view into a leaf
    // the base holds, which the base's Seek may free or write over once it has searched for it.
    changes_->Seek(key);
    return Settle(base_->Seek(key));
  }
  Status Next() override {
    assert(Valid());
    if (on_changes_) {
      changes_->Next();
      return Settle(Status::Ok());
    }
    return Settle(base_->Next());
  }
  bool Valid() const override { return valid_; }
  Status status() const override { return status_; }
  std::string_view key() const override { return on_changes_ ? changes_->key() : base_->key(); }
  std::string_view value() const override { return on_changes_ ? *changes_->value() : base_->value(); }

 private:
  Status Settle(Status s) {
    s = SettleOn(s);
    status_ = s;
    if (!s.ok()) valid_ = false;
    return s;
  }
  Status SettleOn(Status s) {
    valid_ = false;
    while (s.ok()) {
      bool has_base = base_->Valid();
      bool has_change = changes_->Valid();
      if (!has_base && !has_change) return s;
      if (has_change && (!has_base || changes_->key() <= base_->key())) {
        if (has_base && changes_->key() == base_->key()) {
          s = base_->Next();  // shadowed by the change
          if (!s.ok()) break;
        }
        if (changes_->value().has_value()) {
          on_changes_ = true;
          valid_ = true;
          return s;
        }
        changes_->Next();  // a deletion
        continue;
      }
      on_changes_ = false;
      valid_ = true;
      return s;
    }
    return s;
  }

  std::unique_ptr<Iterator> base_;
  std::unique_ptr<ChangeCursor> changes_;
  bool on_changes_ = false;
  bool valid_ = false;
  Status status_;
};

}  // namespace

std::unique_ptr<Iterator> NewViewIterator(const View& view, TreeFile::NodeUse use) {
  auto tree = std::make_unique<TreeIteratorAdapter>(view.file, view.root(), use);
  if (!view.overlay) return tree;
  return std::make_unique<MergedIterator>(std::move(tree), std::make_unique<LogCursor>(view.overlay, view.txn_id()));
}

std::unique_ptr<Iterator> NewChangesIterator(std::unique_ptr<Iterator> base, const Overlay* changes) {
  return std::make_unique<MergedIterator>(std::move(base), std::make_unique<MapCursor>(changes));
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
