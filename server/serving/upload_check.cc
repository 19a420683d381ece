#include "server/serving/upload_check.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace modelserver {

HostTensor ZerosProbe(const std::vector<int64_t>& shape) {
  HostTensor t;
  t.dtype = DType::kFloat32;
  t.shape = shape;
  t.data.assign(static_cast<size_t>(t.NumElements()) * 4, '\0');
  return t;
}

absl::Status CheckUpload(const UploadCandidate& upload, const UploadCheckOptions& options) {
  const std::string& arch = upload.architecture;
  const bool code = upload.format == ModelFormat::kTorchScript ||
                    upload.format == ModelFormat::kAotiPackage ||
                    (upload.format == ModelFormat::kStateDict && arch.empty() &&
                     !upload.architecture_file.empty());
  if (code && options.sandbox_code) {
    // Nothing of it runs here: the zip-level checks (friendly early errors) in
    // process, then a load in a sandboxed worker, which checks everything.
    if (upload.format == ModelFormat::kTorchScript) {
      RETURN_IF_ERROR(CheckLoadable(upload.path, upload.format, arch, /*trust_torchscript=*/false));
    }
  } else {
    RETURN_IF_ERROR(CheckLoadable(upload.path, upload.format, arch, options.trust_torchscript,
                                  upload.architecture_file));
    if (upload.label_count == 0) return absl::OkStatus();
  }
  ModelLoadOptions lo;
  lo.path = upload.path;
  lo.format = upload.format;
  lo.architecture = upload.architecture_file.empty() ? arch : "";
  lo.architecture_path = upload.architecture_file;
  lo.device = "cpu";
  lo.trust_torchscript = options.trust_torchscript;
  lo.quantized_engine = upload.quantized_engine;
  lo.name = upload.name;
  ASSIGN_OR_RETURN(std::shared_ptr<const Model> model,
                   options.loader ? options.loader(lo) : LoadModelFromFile(lo));
  if (upload.label_count == 0) return absl::OkStatus();
  std::vector<int64_t> shape = model->WarmupShape();
  const bool own_shape = !shape.empty();
  if (!own_shape) {  // e.g. TorchScript: try what its images become
    shape = upload.image_shape;
    shape.insert(shape.begin(), 1);
    // Takes no images: its class count cannot be known, so labels are refused.
    if (!model->ValidateInput(DType::kFloat32, shape).ok()) {
      return CheckLabelCount(upload.label_count, {});
    }
  }
  shape[0] = 1;
  absl::StatusOr<HostTensor> out = model->Forward(ZerosProbe(shape));
  if (!out.ok()) {
    if (own_shape) return out.status();
    return CheckLabelCount(upload.label_count, {});
  }
  return CheckLabelCount(upload.label_count, out->shape);
}

absl::Status CheckLabelCount(size_t labels, const std::vector<int64_t>& output) {
  if (output.size() < 2) {
    return absl::FailedPreconditionError(
        absl::StrCat("labels.txt has ", labels, " lines but the model's output ",
                     output.empty() ? std::string("could not be computed on an image-shaped input")
                                    : absl::StrCat("is ", ShapeString(output)),
                     ", which has no class dimension ([N, C, ...]); labels need one"));
  }
  if (static_cast<int64_t>(labels) == output[1]) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("labels.txt has ", labels, " lines but the model gives ", output[1],
                   " classes (output ", ShapeString(output), "); line i must name class i"));
}

}  // namespace modelserver
