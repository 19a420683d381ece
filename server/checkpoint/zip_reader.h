#ifndef MODELSERVER_SERVER_CHECKPOINT_ZIP_READER_H_
#define MODELSERVER_SERVER_CHECKPOINT_ZIP_READER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modelserver {

// Reads the zip archives that torch.save and torch.jit.save write, from a file
// (pread, no mapping) or from memory. Parses the central directory, ZIP64
// included, and checks every record lies inside the archive. Only stored
// (uncompressed) records can be read -- torch.save writes nothing else; the
// deflated code/ records of TorchScript archives are listed but not read.
//
// Errors: DATA_LOSS for a truncated, malformed or non-zip file,
// FAILED_PRECONDITION when reading a compressed record, NOT_FOUND for a missing
// record.
//
// Thread-safe after Open: reads use pread and touch no shared state.
//
//   ASSIGN_OR_RETURN(auto zip, ZipReader::Open("model_weights.pth"));
//   ASSIGN_OR_RETURN(const ZipReader::Entry* e, zip->Find("archive/data.pkl"));
//   ASSIGN_OR_RETURN(std::string pkl, zip->ReadToString(*e, 1 << 30));
class ZipReader {
 public:
  struct Entry {
    std::string name;
    uint64_t size = 0;         // uncompressed size
    uint64_t stored_size = 0;  // bytes in the archive
    uint16_t method = 0;       // 0 = stored; anything else cannot be read
    uint32_t crc32 = 0;
    uint64_t header_offset = 0;  // local file header
    uint64_t data_offset = 0;    // first byte of the record's data
  };

  static absl::StatusOr<std::unique_ptr<ZipReader>> Open(const std::string& path);
  // Reads an archive held in memory (tests, fuzzing).
  static absl::StatusOr<std::unique_ptr<ZipReader>> FromBuffer(std::string data);
  // Reads the archive in bytes [offset, offset + size) of the open file `fd` (a
  // sandboxed worker's memfd; duplicated, the caller keeps its own); `name` for
  // messages. Nothing is copied up front.
  static absl::StatusOr<std::unique_ptr<ZipReader>> FromFd(int fd, uint64_t offset, uint64_t size,
                                                           std::string name);

  // A stored record that is itself a zip archive (the torch.save files inside a
  // torch.export archive), read in place: from the same file without copying, or
  // from a copy of the record for an archive held in memory. FAILED_PRECONDITION
  // for a compressed record; the nested archive's own errors otherwise. The
  // record's CRC is not checked (the nested reader checks each of its records').
  absl::StatusOr<std::unique_ptr<ZipReader>> OpenNested(const Entry& entry) const;

  ~ZipReader();
  ZipReader(const ZipReader&) = delete;
  ZipReader& operator=(const ZipReader&) = delete;

  const std::vector<Entry>& entries() const { return entries_; }
  uint64_t archive_size() const { return size_; }

  // The entry named exactly `name`; NOT_FOUND otherwise.
  absl::StatusOr<const Entry*> Find(absl::string_view name) const;

  // Copies the record's bytes into `dst` (exactly entry.size bytes). With
  // `verify_crc`, checks the CRC-32 from the central directory (DATA_LOSS on a
  // mismatch). Blocks on file I/O.
  absl::Status ReadInto(const Entry& entry, void* dst, bool verify_crc) const;
  // The whole record as a string, refused (RESOURCE_EXHAUSTED) above `max_size`.
  // Stored records, and with `allow_deflated` deflated ones too (method 8, what
  // torch.jit.save uses for code/; at most 1 GiB, inflated into at most its
  // declared size). Always verifies the CRC.
  absl::StatusOr<std::string> ReadToString(const Entry& entry, uint64_t max_size,
                                           bool allow_deflated = false) const;

 private:
  // A deflated record, inflated into at most entry.size bytes (a record that
  // inflates to more or less than it declares is DATA_LOSS).
  absl::StatusOr<std::string> Inflate(const Entry& entry, uint64_t max_size) const;
  ZipReader() = default;
  absl::Status ReadAt(uint64_t offset, void* dst, uint64_t n) const;
  // Where the central directory is (from the end record and, for ZIP64 archives,
  // the ZIP64 end record); `limit` is where it must end.
  struct Directory {
    uint64_t num_entries = 0, size = 0, offset = 0, limit = 0, end_offset = 0;
  };
  // Parse: FindDirectory, then one ParseCentralEntry + LocateData per record.
  absl::Status Parse();
  absl::StatusOr<Directory> FindDirectory() const;
  // DATA_LOSS for a file without an end record: truncated zip, or not a zip.
  absl::Status NoEndRecord() const;
  absl::Status ReadZip64End(Directory* d) const;
  // Parses the central-directory header at `h` (`avail` bytes left) into *entry;
  // returns the header's length.
  absl::StatusOr<uint64_t> ParseCentralEntry(const unsigned char* h, uint64_t avail, uint64_t index,
                                             Entry* entry) const;
  absl::Status ApplyZip64Extra(const unsigned char* x, uint16_t extra_len, uint64_t* size,
                               uint64_t* comp_size, uint64_t* local_offset,
                               const std::string& name) const;
  // Sets entry->data_offset from its local header (which must carry the same
  // name); the data must end by `records_end`.
  absl::Status LocateData(uint64_t records_end, Entry* entry) const;
  // DATA_LOSS when two records share bytes.
  absl::Status CheckNoOverlap() const;

  // Constant after construction.
  int fd_ = -1;         // file backing, or -1 for memory
  std::string buffer_;  // memory backing
  std::string path_;    // for messages
  uint64_t size_ = 0;
  uint64_t base_ = 0;  // where the archive starts in fd_
  std::vector<Entry> entries_;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_CHECKPOINT_ZIP_READER_H_
