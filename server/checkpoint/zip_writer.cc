#include "server/checkpoint/zip_writer.h"

#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace modelserver {
namespace {

constexpr uint64_t kAlign = 64;
constexpr uint64_t k4G = 0xFFFFFFFFull;

void Put16(std::string* s, uint16_t v) {
  s->push_back(static_cast<char>(v & 0xff));
  s->push_back(static_cast<char>(v >> 8));
}
void Put32(std::string* s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void Put64(std::string* s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t Crc(const void* data, uint64_t n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* p = static_cast<const Bytef*>(data);
  while (n > 0) {
    const uInt chunk = static_cast<uInt>(std::min<uint64_t>(n, 1u << 30));
    crc = crc32(crc, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

}  // namespace

absl::Status ZipWriter::Write(const void* data, uint64_t size) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = write(fd_, p, std::min<uint64_t>(size, 1u << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("write failed: ", std::strerror(errno)));
    }
    p += n;
    size -= static_cast<uint64_t>(n);
    offset_ += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status ZipWriter::Add(absl::string_view name, const void* data, uint64_t size) {
  Record r{std::string(name), offset_, size, Crc(data, size)};
  const bool zip64 = size >= k4G || offset_ >= k4G;
  std::string h;
  Put32(&h, 0x04034b50);
  Put16(&h, zip64 ? 45 : 20);  // version needed
  Put16(&h, 0);                // flags
  Put16(&h, 0);                // stored
  Put16(&h, 0);                // time
  Put16(&h, 0x21);             // date (1980-01-01)
  Put32(&h, r.crc);
  Put32(&h, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(size));
  Put32(&h, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(size));
  Put16(&h, static_cast<uint16_t>(name.size()));
  std::string extra;
  if (zip64) {
    Put16(&extra, 0x0001);
    Put16(&extra, 16);
    Put64(&extra, size);
    Put64(&extra, size);
  }
  // Pad so that the data starts on a 64-byte boundary (PyTorch's "FB" padding).
  const uint64_t before = offset_ + 30 + name.size() + extra.size() + 4;
  const uint64_t pad = (kAlign - before % kAlign) % kAlign;
  Put16(&extra, 0x4246);  // "FB"
  Put16(&extra, static_cast<uint16_t>(pad));
  extra.append(pad, 'Z');
  Put16(&h, static_cast<uint16_t>(extra.size()));
  h.append(name.data(), name.size());
  h += extra;
  RETURN_IF_ERROR(Write(h.data(), h.size()));
  RETURN_IF_ERROR(Write(data, size));
  records_.push_back(std::move(r));
  return absl::OkStatus();
}

namespace {

// The central-directory header of `r` (ZIP64 fields when it needs them).
void PutCentralHeader(const ZipWriter::Record& r, std::string* cd) {
  const bool zip64 = r.size >= k4G || r.offset >= k4G;
  Put32(cd, 0x02014b50);
  Put16(cd, zip64 ? 45 : 20);  // made by
  Put16(cd, zip64 ? 45 : 20);  // needed
  Put16(cd, 0);
  Put16(cd, 0);
  Put16(cd, 0);
  Put16(cd, 0x21);
  Put32(cd, r.crc);
  Put32(cd, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(r.size));
  Put32(cd, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(r.size));
  Put16(cd, static_cast<uint16_t>(r.name.size()));
  Put16(cd, zip64 ? 28 : 0);  // extra
  Put16(cd, 0);               // comment
  Put16(cd, 0);               // disk
  Put16(cd, 0);               // internal attributes
  Put32(cd, 0);               // external attributes
  Put32(cd, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(r.offset));
  *cd += r.name;
  if (zip64) {
    Put16(cd, 0x0001);
    Put16(cd, 24);
    Put64(cd, r.size);
    Put64(cd, r.size);
    Put64(cd, r.offset);
  }
}

// The ZIP64 end record and locator, when needed, then the end record.
std::string EndRecords(uint64_t records, uint64_t cd_start, uint64_t cd_size, uint64_t z64_offset) {
  std::string end;
  const bool zip64 = cd_start >= k4G || records >= 0xFFFF;
  if (zip64) {
    Put32(&end, 0x06064b50);
    Put64(&end, 44);
    Put16(&end, 45);
    Put16(&end, 45);
    Put32(&end, 0);
    Put32(&end, 0);
    Put64(&end, records);
    Put64(&end, records);
    Put64(&end, cd_size);
    Put64(&end, cd_start);
    Put32(&end, 0x07064b50);
    Put32(&end, 0);
    Put64(&end, z64_offset);
    Put32(&end, 1);
  }
  Put32(&end, 0x06054b50);
  Put16(&end, 0);
  Put16(&end, 0);
  Put16(&end, zip64 ? 0xFFFF : static_cast<uint16_t>(records));
  Put16(&end, zip64 ? 0xFFFF : static_cast<uint16_t>(records));
  Put32(&end, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(cd_size));
  Put32(&end, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(cd_start));
  Put16(&end, 0);
  return end;
}

}  // namespace

absl::Status ZipWriter::Finish() {
  const uint64_t cd_start = offset_;
  std::string cd;
  for (const Record& r : records_) PutCentralHeader(r, &cd);
  RETURN_IF_ERROR(Write(cd.data(), cd.size()));
  const std::string end = EndRecords(records_.size(), cd_start, cd.size(), offset_);
  return Write(end.data(), end.size());
}

}  // namespace modelserver
