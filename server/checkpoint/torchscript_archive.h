#ifndef MODELSERVER_SERVER_CHECKPOINT_TORCHSCRIPT_ARCHIVE_H_
#define MODELSERVER_SERVER_CHECKPOINT_TORCHSCRIPT_ARCHIVE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/checkpoint/zip_reader.h"

namespace modelserver {

// What can be checked in a TorchScript archive (torch.jit.save) before LibTorch
// reads it: that it holds TorchScript code (code/ records), and that none of its
// classes defines __setstate__ -- torch::jit::load runs those while it unpickles
// the module's state, before any check of the module's operators could run.
// Reads (and inflates, bounded) every record LibTorch could read as code: any
// record in a folder named "code" in any case, whatever its extension; finds
// `def __setstate__` however the two tokens are spaced (blanks, tabs, backslash
// line breaks). Except in torch's own quantized module classes (records under
// __torch__/torch/ao/nn/quantized/, .../ao/nn/intrinsic/quantized/ and the
// pre-2.0 torch/nn/ spellings): their __setstate__ repacks the int8 weights
// (quantized::*_prepack), and what it calls is checked by the operator
// allowlist after the worker loads the file. A friendly early error, not the
// boundary: LibTorch's lexer and class loader decide what runs, and the
// sandboxed worker is what stops it.
//
// FAILED_PRECONDITION for a non-TorchScript archive or a __setstate__ (naming
// the record); DATA_LOSS / RESOURCE_EXHAUSTED from reading a record. `what`
// prefixes messages. Thread-safe.
absl::Status CheckTorchScriptArchive(const ZipReader& zip, const std::string& what);

// Whether the archive holds TorchScript code (code/ records or constants.pkl):
// how a torch.jit.save file is told from a torch.save one.
bool HasTorchScriptCode(const ZipReader& zip);

// The archive's file format version as LibTorch reads it: its `.data/version`
// record where it has one, else `version`, in the folder of its first record (names
// compared ignoring case, as LibTorch's zip lookup does); decimal digits with blanks
// around them. NOT_FOUND without either record, INVALID_ARGUMENT when it holds no
// number (LibTorch's own error then says more). Thread-safe.
absl::StatusOr<uint64_t> TorchScriptFormatVersion(const ZipReader& zip);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_CHECKPOINT_TORCHSCRIPT_ARCHIVE_H_
