#include "server/checkpoint/zip_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace modelserver {
namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kEndSize = 22;
constexpr size_t kMaxComment = 0xFFFF;
constexpr uint64_t kMaxEntries = 1 << 20;

uint16_t Le16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t Le32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t Le64(const unsigned char* p) {
  return static_cast<uint64_t>(Le32(p)) | (static_cast<uint64_t>(Le32(p + 4)) << 32);
}

uint32_t Crc32(uint32_t crc, const void* data, uint64_t n) {
  const auto* p = static_cast<const Bytef*>(data);
  while (n > 0) {
    const uInt chunk = static_cast<uInt>(std::min<uint64_t>(n, 1u << 30));
    crc = static_cast<uint32_t>(crc32(crc, p, chunk));
    p += chunk;
    n -= chunk;
  }
  return crc;
}

}  // namespace

ZipReader::~ZipReader() {
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<std::unique_ptr<ZipReader>> ZipReader::Open(const std::string& path) {
  std::unique_ptr<ZipReader> r(new ZipReader());
  r->path_ = path;
  r->fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (r->fd_ < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat("no file ", path));
    return absl::InternalError(absl::StrCat("cannot open ", path, ": ", std::strerror(err)));
  }
  struct stat st;
  if (fstat(r->fd_, &st) != 0) {
    return absl::InternalError(absl::StrCat("cannot stat ", path, ": ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  r->size_ = static_cast<uint64_t>(st.st_size);
  RETURN_IF_ERROR(r->Parse());
  return r;
}

absl::StatusOr<std::unique_ptr<ZipReader>> ZipReader::FromBuffer(std::string data) {
  std::unique_ptr<ZipReader> r(new ZipReader());
  r->path_ = "<memory>";
  r->buffer_ = std::move(data);
  r->size_ = r->buffer_.size();
  RETURN_IF_ERROR(r->Parse());
  return r;
}

absl::StatusOr<std::unique_ptr<ZipReader>> ZipReader::FromFd(int fd, uint64_t offset, uint64_t size,
                                                             std::string name) {
  std::unique_ptr<ZipReader> r(new ZipReader());
  r->path_ = std::move(name);
  struct stat st;
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < offset ||
      static_cast<uint64_t>(st.st_size) - offset < size) {
    return absl::InvalidArgumentError(
        absl::StrCat(r->path_, ": the window [", offset, ", +", size, ") is not within the file"));
  }
  r->fd_ = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (r->fd_ < 0) {
    return absl::InternalError(absl::StrCat(r->path_, ": dup: ", std::strerror(errno)));
  }
  r->base_ = offset;
  r->size_ = size;
  RETURN_IF_ERROR(r->Parse());
  return r;
}

absl::StatusOr<std::unique_ptr<ZipReader>> ZipReader::OpenNested(const Entry& entry) const {
  if (entry.method != 0 || entry.size != entry.stored_size) {
    return absl::FailedPreconditionError(absl::StrCat(
        path_, ": record '", entry.name, "' is compressed; a nested archive must be stored"));
  }
  // Parse checked that the record lies inside the archive.
  if (fd_ >= 0) {
    return FromFd(fd_, base_ + entry.data_offset, entry.stored_size,
                  absl::StrCat(path_, ":", entry.name));
  }
  auto nested = FromBuffer(buffer_.substr(entry.data_offset, entry.stored_size));
  if (nested.ok()) (*nested)->path_ = absl::StrCat(path_, ":", entry.name);
  return nested;
}

absl::Status ZipReader::ReadAt(uint64_t offset, void* dst, uint64_t n) const {
  if (offset > size_ || n > size_ - offset) {
    return absl::DataLossError(absl::StrCat(path_, ": read of ", n, " bytes at offset ", offset,
                                            " runs past the end of the file (", size_,
                                            " bytes); the checkpoint is truncated"));
  }
  if (fd_ < 0) {
    if (n > 0) std::memcpy(dst, buffer_.data() + offset, n);
    return absl::OkStatus();
  }
  auto* out = static_cast<char*>(dst);
  while (n > 0) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(n, 1u << 30));
    const ssize_t got = pread(fd_, out, want, static_cast<off_t>(base_ + offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return absl::DataLossError(absl::StrCat(path_, ": read failed: ", std::strerror(errno)));
    }
    if (got == 0) {
      return absl::DataLossError(
          absl::StrCat(path_, ": unexpected end of file at offset ", offset));
    }
    out += got;
    offset += static_cast<uint64_t>(got);
    n -= static_cast<uint64_t>(got);
  }
  return absl::OkStatus();
}

absl::StatusOr<ZipReader::Directory> ZipReader::FindDirectory() const {
  if (size_ < kEndSize) {
    return absl::DataLossError(absl::StrCat(
        path_, " is not a zip archive (", size_,
        " bytes); expected a file written by torch.save (PyTorch >= 1.6) or torch.jit.save"));
  }
  // The end-of-central-directory record is in the last 22 + 64 KiB bytes.
  const uint64_t tail_len = std::min<uint64_t>(size_, kEndSize + kMaxComment);
  std::string tail(tail_len, '\0');
  RETURN_IF_ERROR(ReadAt(size_ - tail_len, tail.data(), tail_len));
  const auto* t = reinterpret_cast<const unsigned char*>(tail.data());
  int64_t end_pos = -1;
  for (int64_t i = static_cast<int64_t>(tail_len - kEndSize); i >= 0 && end_pos < 0; --i) {
    if (Le32(t + i) == kEndSig) end_pos = i;
  }
  if (end_pos < 0) return NoEndRecord();
  const unsigned char* e = t + end_pos;
  Directory d;
  d.end_offset = size_ - tail_len + static_cast<uint64_t>(end_pos);
  d.num_entries = Le16(e + 10);
  d.size = Le32(e + 12);
  d.offset = Le32(e + 16);
  d.limit = d.end_offset;
  if (d.num_entries == 0xFFFF || d.size == 0xFFFFFFFF || d.offset == 0xFFFFFFFF) {
    RETURN_IF_ERROR(ReadZip64End(&d));
  }
  if (d.num_entries > kMaxEntries) {
    return absl::DataLossError(
        absl::StrCat(path_, ": ", d.num_entries, " zip entries is too many"));
  }
  if (d.offset > d.limit || d.size > d.limit - d.offset) {
    return absl::DataLossError(
        absl::StrCat(path_, ": central directory (offset ", d.offset, ", ", d.size,
                     " bytes) lies outside the archive; the file is truncated or corrupt"));
  }
  return d;
}

absl::Status ZipReader::NoEndRecord() const {
  // A zip whose end was cut off still starts with a local header.
  unsigned char head[4] = {0, 0, 0, 0};
  RETURN_IF_ERROR(ReadAt(0, head, 4));
  if (Le32(head) == kLocalHeaderSig) {
    return absl::DataLossError(absl::StrCat(
        path_, ": zip archive has no end-of-central-directory record; the file is truncated"));
  }
  return absl::DataLossError(
      absl::StrCat(path_,
                   " is not a zip archive; expected a file written by torch.save "
                   "(PyTorch >= 1.6, not the legacy _use_new_zipfile_serialization=False format) "
                   "or torch.jit.save"));
}

absl::Status ZipReader::ReadZip64End(Directory* d) const {
  if (d->end_offset < 20) return absl::DataLossError(absl::StrCat(path_, ": bad ZIP64 locator"));
  unsigned char loc[20];
  RETURN_IF_ERROR(ReadAt(d->end_offset - 20, loc, 20));
  if (Le32(loc) != kZip64LocatorSig) {
    return absl::DataLossError(absl::StrCat(path_, ": ZIP64 locator missing"));
  }
  const uint64_t z64_offset = Le64(loc + 8);
  unsigned char z[56];
  RETURN_IF_ERROR(ReadAt(z64_offset, z, 56));
  if (Le32(z) != kZip64EndSig) {
    return absl::DataLossError(absl::StrCat(path_, ": ZIP64 end record missing"));
  }
  d->num_entries = Le64(z + 32);
  d->size = Le64(z + 40);
  d->offset = Le64(z + 48);
  d->limit = z64_offset;
  return absl::OkStatus();
}

absl::Status ZipReader::ApplyZip64Extra(const unsigned char* x, uint16_t extra_len, uint64_t* size,
                                        uint64_t* comp_size, uint64_t* local_offset,
                                        const std::string& name) const {
  // ZIP64 extended information: the 0xFFFFFFFF fields, in order.
  for (uint32_t xp = 0; xp + 4 <= extra_len;) {
    const uint16_t id = Le16(x + xp);
    const uint16_t len = Le16(x + xp + 2);
    if (xp + 4u + len > extra_len) break;
    if (id == 0x0001) {
      const unsigned char* f = x + xp + 4;
      uint32_t fp = 0;
      auto next = [&](uint64_t* field) -> bool {
        if (*field != 0xFFFFFFFF) return true;
        if (fp + 8 > len) return false;
        *field = Le64(f + fp);
        fp += 8;
        return true;
      };
      if (!next(size) || !next(comp_size) || !next(local_offset)) {
        return absl::DataLossError(absl::StrCat(path_, ": bad ZIP64 field in entry ", name));
      }
    }
    xp += 4u + len;
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ZipReader::ParseCentralEntry(const unsigned char* h, uint64_t avail,
                                                      uint64_t index, Entry* entry) const {
  if (avail < 46 || Le32(h) != kCentralHeaderSig) {
    return absl::DataLossError(
        absl::StrCat(path_, ": central directory entry ", index, " is corrupt"));
  }
  const uint16_t method = Le16(h + 10);
  entry->crc32 = Le32(h + 16);
  uint64_t comp_size = Le32(h + 20);
  uint64_t size = Le32(h + 24);
  const uint16_t name_len = Le16(h + 28);
  const uint16_t extra_len = Le16(h + 30);
  const uint16_t comment_len = Le16(h + 32);
  uint64_t local_offset = Le32(h + 42);
  const uint64_t length = 46ull + name_len + extra_len + comment_len;
  if (avail < length) {
    return absl::DataLossError(
        absl::StrCat(path_, ": central directory entry ", index, " is truncated"));
  }
  entry->name.assign(reinterpret_cast<const char*>(h + 46), name_len);
  RETURN_IF_ERROR(
      ApplyZip64Extra(h + 46 + name_len, extra_len, &size, &comp_size, &local_offset, entry->name));
  if (method == 0 && comp_size != size) {
    return absl::DataLossError(
        absl::StrCat(path_, ": stored zip record '", entry->name, "' has two different sizes"));
  }
  entry->size = size;
  entry->stored_size = comp_size;
  entry->method = method;
  entry->header_offset = local_offset;
  return length;
}

absl::Status ZipReader::LocateData(uint64_t records_end, Entry* entry) const {
  unsigned char lh[30];
  const uint64_t local_offset = entry->header_offset;
  if (local_offset > records_end || records_end - local_offset < 30) {
    return absl::DataLossError(
        absl::StrCat(path_, ": zip record '", entry->name, "' lies outside the archive"));
  }
  RETURN_IF_ERROR(ReadAt(local_offset, lh, 30));
  if (Le32(lh) != kLocalHeaderSig) {
    return absl::DataLossError(
        absl::StrCat(path_, ": zip record '", entry->name, "' has a corrupt local header"));
  }
  // The local header must name the same record as the central directory.
  const uint16_t local_name_len = Le16(lh + 26);
  std::string local_name(local_name_len, '\0');
  if (local_name_len != entry->name.size() ||
      !ReadAt(local_offset + 30, local_name.data(), local_name_len).ok() ||
      local_name != entry->name) {
    return absl::DataLossError(
        absl::StrCat(path_, ": zip record '", entry->name,
                     "' has a local header for another name; the archive is corrupt or crafted"));
  }
  entry->data_offset = local_offset + 30 + local_name_len + Le16(lh + 28);
  if (entry->data_offset > records_end || entry->stored_size > records_end - entry->data_offset) {
    return absl::DataLossError(absl::StrCat(
        path_, ": zip record '", entry->name, "' (", entry->stored_size, " bytes at offset ",
        entry->data_offset, ") runs past the records area; the file is truncated or corrupt"));
  }
  return absl::OkStatus();
}

absl::Status ZipReader::Parse() {
  ASSIGN_OR_RETURN(Directory d, FindDirectory());
  std::string cd(d.size, '\0');
  RETURN_IF_ERROR(ReadAt(d.offset, cd.data(), d.size));
  const auto* p = reinterpret_cast<const unsigned char*>(cd.data());
  uint64_t pos = 0;
  std::unordered_set<std::string> names;
  entries_.reserve(d.num_entries);
  for (uint64_t i = 0; i < d.num_entries; ++i) {
    Entry entry;
    ASSIGN_OR_RETURN(uint64_t length, ParseCentralEntry(p + pos, d.size - pos, i, &entry));
    if (!names.insert(entry.name).second) {
      return absl::DataLossError(absl::StrCat(path_, ": duplicate zip record '", entry.name, "'"));
    }
    // Locate the data through the local header; records end where the directory starts.
    RETURN_IF_ERROR(LocateData(d.offset, &entry));
    entries_.push_back(std::move(entry));
    pos += length;
  }
  return CheckNoOverlap();
}

absl::Status ZipReader::CheckNoOverlap() const {
  // Records (local header to end of data) must not share bytes: otherwise a small
  // file could make many records out of one large one.
  std::vector<const Entry*> sorted;
  sorted.reserve(entries_.size());
  for (const Entry& e : entries_) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(),
            [](const Entry* a, const Entry* b) { return a->header_offset < b->header_offset; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    const Entry& prev = *sorted[i - 1];
    if (sorted[i]->header_offset < prev.data_offset + prev.stored_size) {
      return absl::DataLossError(absl::StrCat(path_, ": zip records '", prev.name, "' and '",
                                              sorted[i]->name,
                                              "' overlap; the archive is corrupt or crafted"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<const ZipReader::Entry*> ZipReader::Find(absl::string_view name) const {
  for (const Entry& e : entries_) {
    if (e.name == name) return &e;
  }
  return absl::NotFoundError(absl::StrCat(path_, ": no record '", name, "' in the archive"));
}

absl::Status ZipReader::ReadInto(const Entry& entry, void* dst, bool verify_crc) const {
  if (entry.method != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        path_, ": zip record '", entry.name, "' is compressed (method ", entry.method,
        "); torch.save writes uncompressed records, re-save the file with torch.save"));
  }
  RETURN_IF_ERROR(ReadAt(entry.data_offset, dst, entry.size));
  if (verify_crc) {
    const uint32_t crc = Crc32(0, dst, entry.size);
    if (crc != entry.crc32) {
      return absl::DataLossError(absl::StrCat(path_, ": zip record '", entry.name,
                                              "' fails its CRC-32 check; the file is corrupt"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ZipReader::Inflate(const Entry& entry, uint64_t max_size) const {
  if (entry.size > max_size || entry.stored_size > max_size) {
    return absl::ResourceExhaustedError(absl::StrCat(path_, ": zip record '", entry.name, "' has ",
                                                     entry.size, " bytes, over the limit of ",
                                                     max_size));
  }
  std::string in(entry.stored_size, '\0');
  RETURN_IF_ERROR(ReadAt(entry.data_offset, in.data(), entry.stored_size));
  // Raw deflate; never more output than the declared size (+1 to notice a lie).
  std::string out(entry.size + 1, '\0');
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK) return absl::InternalError("zlib inflateInit2 failed");
  z.next_in = reinterpret_cast<Bytef*>(in.data());
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = inflate(&z, Z_FINISH);
  const uint64_t produced = z.total_out;
  inflateEnd(&z);
  if (rc != Z_STREAM_END || produced != entry.size) {
    return absl::DataLossError(absl::StrCat(path_, ": compressed zip record '", entry.name,
                                            "' does not inflate to its declared ", entry.size,
                                            " bytes; the file is corrupt"));
  }
  out.resize(entry.size);
  if (Crc32(0, out.data(), out.size()) != entry.crc32) {
    return absl::DataLossError(absl::StrCat(path_, ": zip record '", entry.name,
                                            "' fails its CRC-32 check; the file is corrupt"));
  }
  return out;
}

absl::StatusOr<std::string> ZipReader::ReadToString(const Entry& entry, uint64_t max_size,
                                                    bool allow_deflated) const {
  if (entry.method == 8 && allow_deflated) {
    return Inflate(entry, std::min<uint64_t>(max_size, 1u << 30));
  }
  if (entry.method != 0) return ReadInto(entry, nullptr, false);  // the refusal, before allocating
  if (entry.size > max_size) {
    return absl::ResourceExhaustedError(absl::StrCat(path_, ": zip record '", entry.name, "' has ",
                                                     entry.size, " bytes, over the limit of ",
                                                     max_size));
  }
  std::string out(entry.size, '\0');
  RETURN_IF_ERROR(ReadInto(entry, out.data(), /*verify_crc=*/true));
  return out;
}

}  // namespace modelserver
