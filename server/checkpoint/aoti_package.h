#ifndef MODELSERVER_SERVER_CHECKPOINT_AOTI_PACKAGE_H_
#define MODELSERVER_SERVER_CHECKPOINT_AOTI_PACKAGE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "server/checkpoint/zip_reader.h"

namespace modelserver {

// What an AOTInductor package (torch._inductor.aoti_compile_and_package's .pt2)
// holds for the model it serves, found torch-free before any of its code is
// opened: the archive's records data/aotinductor/<model>/<hash>.so and
// <hash>_metadata.json, under an optional root folder (torch >= 2.7 writes one).
struct AotiPackage {
  std::string model;                          // "model" in every package torch writes
  const ZipReader::Entry* library = nullptr;  // the model's .so (owned by the reader)
  std::string device = "cpu";                 // the metadata's AOTI_DEVICE_KEY
};

struct AotiPackageLimits {
  uint64_t max_library_bytes = uint64_t{4} << 30;
  uint64_t max_metadata_bytes = 64 << 10;
};

// The one model of the package (or, of several, the one named "model") with
// exactly one library; its metadata's device ("cpu" without metadata).
// FAILED_PRECONDITION: no data/aotinductor/ model, several models and none
// named "model", two libraries, no library (a C++-only package), a library
// stored compressed; RESOURCE_EXHAUSTED past the limits; DATA_LOSS for
// metadata that is not a JSON object with a string AOTI_DEVICE_KEY.
// Thread-safe.
absl::StatusOr<AotiPackage> ReadAotiPackage(const ZipReader& zip,
                                            const AotiPackageLimits& limits = {});

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_CHECKPOINT_AOTI_PACKAGE_H_
