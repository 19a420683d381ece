#include "server/checkpoint/format.h"

namespace modelserver {

const char* ModelFormatName(ModelFormat format) {
  switch (format) {
    case ModelFormat::kStateDict:
      return "STATE_DICT";
    case ModelFormat::kTorchScript:
      return "TORCHSCRIPT";
    case ModelFormat::kPickledModule:
      return "PICKLED_MODULE";
    case ModelFormat::kExportedProgram:
      return "EXPORTED_PROGRAM";
    case ModelFormat::kAotiPackage:
      return "AOTI_PACKAGE";
    case ModelFormat::kUnspecified:
      return "CHECKPOINT_FORMAT_UNSPECIFIED";
  }
  return "?";
}

}  // namespace modelserver
