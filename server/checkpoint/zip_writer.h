#ifndef MODELSERVER_SERVER_CHECKPOINT_ZIP_WRITER_H_
#define MODELSERVER_SERVER_CHECKPOINT_ZIP_WRITER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace modelserver {

// Writes an uncompressed zip archive the way torch.save does: stored records,
// each record's data aligned to 64 bytes (padding in the local header's extra
// field), CRC-32 for each, ZIP64 records when the archive passes 4 GiB.
// Thread-compatible. Errors are INTERNAL (I/O).
//
//   ZipWriter w(fd);
//   RETURN_IF_ERROR(w.Add("archive/data.pkl", pkl.data(), pkl.size()));
//   RETURN_IF_ERROR(w.Finish());
class ZipWriter {
 public:
  // Writes to `fd` (not owned, positioned at 0).
  explicit ZipWriter(int fd) : fd_(fd) {}

  absl::Status Add(absl::string_view name, const void* data, uint64_t size);
  // Writes the central directory. No Add afterwards.
  absl::Status Finish();

  uint64_t bytes_written() const { return offset_; }

  // One record written so far, for the central directory.
  struct Record {
    std::string name;
    uint64_t offset;
    uint64_t size;
    uint32_t crc;
  };

 private:
  absl::Status Write(const void* data, uint64_t size);

  int fd_;
  uint64_t offset_ = 0;
  std::vector<Record> records_;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_CHECKPOINT_ZIP_WRITER_H_
