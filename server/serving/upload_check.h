#ifndef MODELSERVER_SERVER_SERVING_UPLOAD_CHECK_H_
#define MODELSERVER_SERVER_SERVING_UPLOAD_CHECK_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/host_tensor.h"
#include "server/model/model.h"
#include "server/model/model_loader.h"

namespace modelserver {

// What an upload is checked with before it is published (UploadCheckpoint).
struct UploadCandidate {
  std::string name;  // the model it is for
  std::string path;  // the uploaded file, in the store's staging area
  ModelFormat format = ModelFormat::kStateDict;
  // The architecture string (the request's, else the model's --model hint).
  std::string architecture;
  // The template uploaded beside a state dict, or empty.
  std::string architecture_file;
  // > 0 when labels were uploaded with it: the model is also loaded on the CPU
  // and run once -- at its own input shape, else at `image_shape` (what its
  // images become) -- and a labels count other than its classes refused.
  size_t label_count = 0;
  std::vector<int64_t> image_shape;
  // The quantized engine it was made for (the header's; "": the server's).
  std::string quantized_engine;
};

struct UploadCheckOptions {
  bool trust_torchscript = false;
  // `loader` runs code-bearing files (TorchScript, architecture templates) in a
  // sandboxed worker: only zip-level checks run in this process.
  bool sandbox_code = false;
  // Loads a model (the registry's loader); LoadModelFromFile when empty.
  std::function<absl::StatusOr<std::shared_ptr<const Model>>(const ModelLoadOptions&)> loader;
};

// Whether `upload` would load (CheckLoadable, and for code-bearing formats a
// load through `options.loader`), and with labels whether their count is the
// model's class count. Blocks (reads the file; may load and run the model).
// The error of the first check that fails.
absl::Status CheckUpload(const UploadCandidate& upload, const UploadCheckOptions& options);

// FAILED_PRECONDITION when `labels` has another count than the class dimension
// (dimension 1) of an output of shape `output`, or when the output has none
// (rank < 2, or empty: it could not be computed).
absl::Status CheckLabelCount(size_t labels, const std::vector<int64_t>& output);

// A float32 tensor of zeros: the probe of warm-ups and upload checks.
HostTensor ZerosProbe(const std::vector<int64_t>& shape);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVING_UPLOAD_CHECK_H_
