#include "server/checkpoint/zip_reader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testing/server_process.h"

namespace modelserver {
namespace {

using testing::FixturesDir;
using ::testing::HasSubstr;
using testing::ReadFile;

std::string Fixture(const std::string& rel) { return FixturesDir() + "/" + rel; }

TEST(ZipReaderTest, ReadsTorchSaveArchive) {
  auto zip = ZipReader::Open(Fixture("tiny/model_weights.pth"));
  ASSERT_TRUE(zip.ok()) << zip.status();
  auto pkl = (*zip)->Find("model_weights/data.pkl");
  ASSERT_TRUE(pkl.ok()) << pkl.status();
  auto text = (*zip)->ReadToString(**pkl, 1 << 20);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(static_cast<unsigned char>((*text)[0]), 0x80);  // PROTO
  EXPECT_EQ(text->back(), '.');                             // STOP
  // torch.save aligns record data to 64 bytes.
  auto rec = (*zip)->Find("model_weights/data/0");
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ((*rec)->data_offset % 64, 0u);
  EXPECT_EQ((*zip)->Find("model_weights/nope").status().code(), absl::StatusCode::kNotFound);
}

TEST(ZipReaderTest, ReadsZip64AndChecksCrc) {
  std::string bytes = ReadFile(Fixture("reader/zip64.zip"));
  auto zip = ZipReader::FromBuffer(bytes);
  ASSERT_TRUE(zip.ok()) << zip.status();
  auto e = (*zip)->Find("a/data.pkl");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(*(*zip)->ReadToString(**e, 100), "hello zip64");
  // Flip one byte of the record: the CRC catches it.
  const size_t at = bytes.find("hello zip64");
  ASSERT_NE(at, std::string::npos);
  bytes[at] = 'j';
  auto bad = ZipReader::FromBuffer(bytes);
  ASSERT_TRUE(bad.ok());
  auto s = (*bad)->ReadToString(**(*bad)->Find("a/data.pkl"), 100);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("CRC-32"));
  std::string dst(11, '\0');
  EXPECT_TRUE((*bad)->ReadInto(**(*bad)->Find("a/data.pkl"), dst.data(), false).ok());
}

TEST(ZipReaderTest, InflatesDeflatedRecordsOnlyWhenAsked) {
  auto zip = ZipReader::Open(Fixture("reader/deflated.zip"));
  ASSERT_TRUE(zip.ok()) << zip.status();
  const ZipReader::Entry& e = **(*zip)->Find("a/data.pkl");
  auto s = (*zip)->ReadToString(e, 1 << 20, /*allow_deflated=*/true);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->size(), 1000u);
  EXPECT_EQ(*s, std::string(1000, 'x'));
  EXPECT_EQ((*zip)->ReadToString(e, 999, true).status().code(),
            absl::StatusCode::kResourceExhausted);
  // A record that inflates to something else than it declares is corrupt.
  ZipReader::Entry lying = e;
  lying.size = 999;
  EXPECT_EQ((*zip)->ReadToString(lying, 1 << 20, true).status().code(),
            absl::StatusCode::kDataLoss);
  lying.size = 1001;
  EXPECT_EQ((*zip)->ReadToString(lying, 1 << 20, true).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(ZipReaderTest, ListsButNeverReadsCompressedRecordsByDefault) {
  auto zip = ZipReader::Open(Fixture("reader/deflated.zip"));
  ASSERT_TRUE(zip.ok()) << zip.status();
  auto e = (*zip)->Find("a/data.pkl");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ((*e)->method, 8);
  EXPECT_EQ((*e)->size, 1000u);
  auto s = (*zip)->ReadToString(**e, 1 << 20);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("compressed"));
}

TEST(ZipReaderTest, TruncatedArchiveIsDataLoss) {
  const std::string bytes = ReadFile(Fixture("tiny/model_weights.pth"));
  for (size_t keep : {bytes.size() / 2, bytes.size() - 30, size_t{100}}) {
    auto zip = ZipReader::FromBuffer(bytes.substr(0, keep));
    EXPECT_EQ(zip.status().code(), absl::StatusCode::kDataLoss) << keep;
    EXPECT_THAT(std::string(zip.status().message()), HasSubstr("truncated")) << keep;
  }
}

TEST(ZipReaderTest, NotAZipIsDataLoss) {
  for (const std::string& bytes : {std::string("short"), std::string(1000, 'x')}) {
    auto zip = ZipReader::FromBuffer(bytes);
    EXPECT_EQ(zip.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(zip.status().message()), HasSubstr("not a zip archive"));
  }
  EXPECT_EQ(ZipReader::Open("/nonexistent/file.pth").status().code(), absl::StatusCode::kNotFound);
}

TEST(ZipReaderTest, CorruptCentralDirectoryOffsetsAreDataLoss) {
  std::string bytes = ReadFile(Fixture("tiny/model_weights.pth"));
  // End-of-central-directory: make the directory offset point past the file.
  const size_t eocd = bytes.rfind(std::string("PK\x05\x06", 4));
  ASSERT_NE(eocd, std::string::npos);
  std::string bad = bytes;
  bad[eocd + 16] = '\xff';
  bad[eocd + 17] = '\xff';
  bad[eocd + 18] = '\xff';
  bad[eocd + 19] = '\x7f';
  EXPECT_EQ(ZipReader::FromBuffer(bad).status().code(), absl::StatusCode::kDataLoss);
  // A record whose size runs past the records area.
  const size_t cd = bytes.find(std::string("PK\x01\x02", 4));
  ASSERT_NE(cd, std::string::npos);
  bad = bytes;
  bad[cd + 20] = bad[cd + 24] = '\xff';
  bad[cd + 21] = bad[cd + 25] = '\xff';
  bad[cd + 22] = bad[cd + 26] = '\xff';
  bad[cd + 23] = bad[cd + 27] = '\x0f';
  EXPECT_EQ(ZipReader::FromBuffer(bad).status().code(), absl::StatusCode::kDataLoss);
}

// Hand-made archives of stored records, for what no zip writer produces.
void Put(std::string* s, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
std::string LocalHeader(const std::string& name, uint32_t size) {
  std::string h;
  Put(&h, 0x04034b50, 4);
  Put(&h, 20, 2);
  Put(&h, 0, 2);
  Put(&h, 0, 2);  // stored
  Put(&h, 0, 4);  // time, date
  Put(&h, 0, 4);  // crc
  Put(&h, size, 4);
  Put(&h, size, 4);
  Put(&h, name.size(), 2);
  Put(&h, 0, 2);
  return h + name;
}
std::string CentralHeader(const std::string& name, uint32_t size, uint32_t offset) {
  std::string h;
  Put(&h, 0x02014b50, 4);
  Put(&h, 20, 2);
  Put(&h, 20, 2);
  Put(&h, 0, 2);
  Put(&h, 0, 2);
  Put(&h, 0, 4);
  Put(&h, 0, 4);  // crc
  Put(&h, size, 4);
  Put(&h, size, 4);
  Put(&h, name.size(), 2);
  Put(&h, 0, 2);
  Put(&h, 0, 2);
  Put(&h, 0, 2);
  Put(&h, 0, 2);
  Put(&h, 0, 4);
  Put(&h, offset, 4);
  return h + name;
}
// `records` bytes followed by a central directory of `central` entries.
std::string Archive(const std::string& records, const std::vector<std::string>& central) {
  std::string cd;
  for (const std::string& c : central) cd += c;
  std::string end;
  Put(&end, 0x06054b50, 4);
  Put(&end, 0, 4);
  Put(&end, central.size(), 2);
  Put(&end, central.size(), 2);
  Put(&end, cd.size(), 4);
  Put(&end, records.size(), 4);
  Put(&end, 0, 2);
  return records + cd + end;
}

TEST(ZipReaderTest, HandMadeArchiveParses) {
  const std::string records = LocalHeader("a", 4) + "xxxx" + LocalHeader("b", 2) + "yy";
  auto zip = ZipReader::FromBuffer(
      Archive(records, {CentralHeader("a", 4, 0), CentralHeader("b", 2, 35)}));
  ASSERT_TRUE(zip.ok()) << zip.status();
  EXPECT_EQ((*zip)->entries().size(), 2u);
}

TEST(ZipReaderTest, LocalHeaderForAnotherNameIsRefused) {
  const std::string records = LocalHeader("a", 4) + "xxxx";
  auto zip = ZipReader::FromBuffer(Archive(records, {CentralHeader("b", 4, 0)}));
  EXPECT_EQ(zip.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(zip.status().message()), HasSubstr("local header for another name"));
}

TEST(ZipReaderTest, OverlappingRecordsAreRefused) {
  // Many names for one large record: each central entry points at a local header
  // hidden inside the data of the one before.
  std::string inner;
  for (int i = 0; i < 3; ++i) inner += LocalHeader("r" + std::to_string(i), 4) + "data";
  const std::string records = LocalHeader("outer", inner.size()) + inner;
  std::vector<std::string> central = {CentralHeader("outer", inner.size(), 0)};
  for (int i = 0; i < 3; ++i) {
    central.push_back(CentralHeader("r" + std::to_string(i), 4, 35 + i * 36));
  }
  auto zip = ZipReader::FromBuffer(Archive(records, central));
  EXPECT_EQ(zip.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(zip.status().message()), HasSubstr("overlap"));
}

}  // namespace
}  // namespace modelserver
