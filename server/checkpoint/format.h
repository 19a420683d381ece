#ifndef MODELSERVER_SERVER_CHECKPOINT_FORMAT_H_
#define MODELSERVER_SERVER_CHECKPOINT_FORMAT_H_

namespace modelserver {

// How a checkpoint file stores a model (the API's CheckpointFormat, same numbers).
enum class ModelFormat {
  kUnspecified = 0,
  kStateDict = 1,
  kTorchScript = 2,
  kPickledModule = 3,
  kExportedProgram = 4,  // torch.export.save's .pt2
  kAotiPackage = 5,      // aoti_compile_and_package's .pt2 (native code)
};

// "STATE_DICT", "TORCHSCRIPT", "PICKLED_MODULE", "EXPORTED_PROGRAM",
// "AOTI_PACKAGE", "CHECKPOINT_FORMAT_UNSPECIFIED".
const char* ModelFormatName(ModelFormat format);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_CHECKPOINT_FORMAT_H_
