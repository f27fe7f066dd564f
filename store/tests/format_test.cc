// The file format's encodings: headers, records, commit records and nodes reject every damage.
#include <gtest/gtest.h>

#include "coding.h"
#include "format.h"
#include "node.h"

namespace dbdb::format {
namespace {

TEST(Format, HeaderRoundTripsAndRejectsDamage) {
  std::string header = EncodeFileHeader(FileHeader{kFormatVersion, 7});
  ASSERT_EQ(header.size(), kFileHeaderSizeBytes);
  auto decoded = DecodeFileHeader(header);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->generation, 7u);
  for (size_t byte : {0, 8, 16, 56}) {
    std::string bad = header;
    bad[byte] ^= 1;
    EXPECT_TRUE(DecodeFileHeader(bad).status().IsCorruption()) << "byte " << byte;
  }
  EXPECT_TRUE(DecodeFileHeader(header.substr(0, 100)).status().IsCorruption());
}

TEST(Format, RecordChecksumCoversEveryByteAndTheOffset) {
  std::string record;
  AppendRecord(&record, 4096, RecordType::kLeaf, "payload");
  ASSERT_EQ(record.size(), kRecordOverheadBytes + 7);
  auto view = VerifyRecord(4096, record);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->payload, "payload");
  EXPECT_EQ(view->type, RecordType::kLeaf);
  for (size_t i = 0; i < record.size(); i++) {
    std::string bad = record;
    bad[i] ^= 0x10;
    EXPECT_TRUE(VerifyRecord(4096, bad).status().IsCorruption()) << "flipped byte " << i;
  }
  EXPECT_TRUE(VerifyRecord(4097, record).status().IsCorruption()) << "a record moved elsewhere";
}

Commit SampleCommit() {
  Commit c;
  c.offset = 10000;
  c.txn_id = 5;
  c.prev_commit_offset = 9000;
  c.body_offset = 9000 + kCommitRecordSizeBytes;
  c.body_checksum = 123;
  c.synced_through = c.body_offset;
  c.root_offset = 9500;
  c.root_length = 100;
  c.tree_height = 2;
  c.key_count = 42;
  c.tree_bytes = 4096;
  c.commits_in_file = 5;
  return c;
}

TEST(Format, CommitRoundTripsAndChecksStructure) {
  Commit c = SampleCommit();
  std::string payload = EncodeCommitPayload(c);
  ASSERT_EQ(payload.size(), kCommitPayloadSizeBytes);
  auto decoded = DecodeCommitPayload(c.offset, payload);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->txn_id, 5u);
  EXPECT_EQ(decoded->key_count, 42u);
  EXPECT_EQ(decoded->end(), c.offset + kCommitRecordSizeBytes);
  Commit bad = c;
  bad.root_offset = c.offset;  // the root must lie before the commit
  EXPECT_TRUE(DecodeCommitPayload(c.offset, EncodeCommitPayload(bad)).status().IsCorruption());
  bad = c;
  bad.body_offset += 1;  // the body must start where the previous commit ends
  EXPECT_TRUE(DecodeCommitPayload(c.offset, EncodeCommitPayload(bad)).status().IsCorruption());
  bad = c;
  bad.txn_id = 0;
  EXPECT_TRUE(DecodeCommitPayload(c.offset, EncodeCommitPayload(bad)).status().IsCorruption());
}

TEST(Format, CommitPrefixIsTheRecordsFirstBytes) {
  std::string record;
  AppendRecord(&record, 10000, RecordType::kCommit, EncodeCommitPayload(SampleCommit()));
  EXPECT_EQ(record.size(), kCommitRecordSizeBytes);
  EXPECT_EQ(record.substr(0, 8), CommitRecordPrefix());
}

TEST(Nodes, LeafRoundTripAndDamage) {
  std::vector<LeafEntry> entries = {{"a", "1"}, {"b", ""}, {"c", "333"}};
  std::string payload = EncodeLeaf(entries, 0, entries.size());
  auto node = DecodeNode(4096, RecordType::kLeaf, payload);
  ASSERT_TRUE(node.ok());
  EXPECT_EQ((*node)->size(), 3u);
  EXPECT_EQ((*node)->values[2], "333");
  EXPECT_EQ((*node)->LowerBound("bb"), 2u);
  EXPECT_TRUE(DecodeNode(4096, RecordType::kLeaf, payload.substr(0, payload.size() - 1)).status().IsCorruption());
  EXPECT_TRUE(DecodeNode(4096, RecordType::kLeaf, payload + "x").status().IsCorruption());
  std::vector<LeafEntry> unsorted = {{"b", "1"}, {"a", "2"}};
  EXPECT_TRUE(DecodeNode(4096, RecordType::kLeaf, EncodeLeaf(unsorted, 0, 2)).status().IsCorruption());
  std::string huge_count;
  coding::PutVarint(&huge_count, uint64_t{1} << 40);
  EXPECT_TRUE(DecodeNode(4096, RecordType::kLeaf, huge_count).status().IsCorruption());
}

TEST(Nodes, InternalRoutesKeysAndChildrenPointBackwards) {
  std::vector<ChildEntry> children = {{"", {512, 100}}, {"m", {612, 100}}, {"t", {712, 100}}};
  auto node = DecodeNode(2000, RecordType::kInternal, EncodeInternal(children, 0, 3));
  ASSERT_TRUE(node.ok());
  EXPECT_EQ((*node)->ChildFor("a"), 0u);
  EXPECT_EQ((*node)->ChildFor("m"), 1u);
  EXPECT_EQ((*node)->ChildFor("s"), 1u);
  EXPECT_EQ((*node)->ChildFor("z"), 2u);
  // The same node placed before its children is corrupt.
  EXPECT_TRUE(DecodeNode(600, RecordType::kInternal, EncodeInternal(children, 0, 3)).status().IsCorruption());
}

TEST(Coding, VarintRejectsOverflowAndTruncation) {
  std::string s;
  coding::PutVarint(&s, UINT64_MAX);
  uint64_t v;
  coding::Reader ok(s);
  ASSERT_TRUE(ok.GetVarint(&v));
  EXPECT_EQ(v, UINT64_MAX);
  coding::Reader truncated(std::string_view(s).substr(0, 3));
  EXPECT_FALSE(truncated.GetVarint(&v));
  std::string overflow(10, '\xff');
  coding::Reader bad(overflow);
  EXPECT_FALSE(bad.GetVarint(&v));
}

}  // namespace
}  // namespace dbdb::format
