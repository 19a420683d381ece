#ifndef MODELSERVER_SERVER_MODEL_EXPORTED_PROGRAM_MODEL_H_
#define MODELSERVER_SERVER_MODEL_EXPORTED_PROGRAM_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/torch_model.h"

namespace modelserver {

struct FloatLayer;

// A `torch.export` program (torch.export.save's `.pt2`, either archive layout)
// served as a Model, without Python and without compiled code: the graph that
// server/checkpoint/exported_program.h reads is run by an interpreter. Each
// node's operator is looked up once, at load, in LibTorch's dispatcher by name and
// overload; its arguments are bound by name against the operator's schema
// (defaults filled in, ints widened to floats where the schema wants a float) and
// it is called boxed. Symbolic sizes (aten.sym_size and the int arithmetic of
// Python's operator module) are computed per call; each value is freed after its
// last use.
//
// What a program may do: ATen operators on the TorchScript allowlist
// (IsAllowedTorchScriptOperator: no files, printing, random numbers, processes or
// uninitialised memory), sym_size / sym_numel / sym_stride and int arithmetic;
// nothing writes to a weight (an in-place or out= operator whose written argument
// is a parameter, buffer or constant, or a view of one, is refused); one tensor
// input; outputs that are tensors (or None). Refused at load with
// FAILED_PRECONDITION naming the node and the operator; an operator this LibTorch
// lacks names itself and the LibTorch version.
//
// Batching: a program exported with a dynamic first dimension (torch.export.Dim)
// takes batches of at least the range's minimum (INVALID_ARGUMENT naming the
// dimension and range below it); a batch past the range's maximum -- a large
// request, or requests the queue merged -- runs in pieces inside the range, their
// outputs joined. A program exported at a fixed batch B takes requests of B
// samples (or a multiple), run B at a time. The other dimensions: equal to the
// exported ones, or inside their symbol's range (INVALID_ARGUMENT naming the
// dimension and the range otherwise).
//
// Thread-safe: a call only reads the loaded program and weights.
class ExportedProgramModel : public TorchModel {
 public:
  static absl::StatusOr<std::shared_ptr<ExportedProgramModel>> Load(const std::string& path,
                                                                    const std::string& device,
                                                                    const Numerics& numerics = {},
                                                                    bool verify_crc = true);
  // A state dict (`weights_path`, torch.save(model.state_dict())) served in an
  // architecture template (`template_path`, architecture.pt2: a program exported from
  // the same nn.Module class, its own weights irrelevant): the state dict must hold
  // exactly the program's parameters and persistent buffers, each of its shape
  // (FAILED_PRECONDITION listing missing and unexpected keys and size mismatches, as
  // load_state_dict(strict=True)), and its tensors replace the program's; the
  // program's tensor constants stay. Saves as STATE_DICT.
  static absl::StatusOr<std::shared_ptr<ExportedProgramModel>> LoadTemplate(
      const std::string& template_path, const std::string& weights_path, const std::string& device,
      const Numerics& numerics = {}, bool verify_crc = true);
  ~ExportedProgramModel() override;

  absl::Status ValidateInput(DType dtype, const std::vector<int64_t>& shape) const override;
  bool IsUnbatched(const std::vector<int64_t>&) const override { return false; }
  // The example shape the program was exported with (its size hints).
  std::vector<int64_t> WarmupShape() const override;
  // STATE_DICT: the weights, as torch.save(ep.state_dict()) would write them.
  absl::Status Save(ModelFormat format, const std::string& path) const override;

  // Bounds the CPU memory one forward pass may hold at once (ScopedCpuMemoryBudget;
  // 0: none): a program's intermediate sizes are its own, not known before it runs.
  // Past it the pass fails RESOURCE_EXHAUSTED. Call before the model serves.
  void SetForwardMemoryBudget(uint64_t bytes);

  // The program as a chain of float layers for `--precision int8` (QuantizeInt8):
  // each operator node takes the previous one's output and weights, and is a 2-d
  // convolution (aten.conv2d, aten.convolution), an eval-mode batch norm
  // (aten.batch_norm, aten._native_batch_norm_legit_no_training), ReLU, max / average
  // / adaptive average pooling, a flatten (aten.flatten, or a view / reshape to
  // [batch, -1]), a mean over the last two dimensions, a linear layer (aten.linear,
  // aten.addmm / aten.mm of a transposed weight) or an identity (eval-mode dropout,
  // clone, alias, detach); nodes that only compute on weights (a transpose) are
  // evaluated here. Size arithmetic and assertions are skipped. Anything else (a
  // residual connection, another operator, several outputs) is FAILED_PRECONDITION
  // naming the node.
  absl::StatusOr<std::vector<FloatLayer>> Int8Layers() const;

  // Whether the first dimension is dynamic (batched), and its range; a fixed batch
  // otherwise (min == max == that batch).
  bool dynamic_batch() const;
  int64_t min_batch() const;
  int64_t max_batch() const;

  // The compiled graph (opaque outside the model's source).
  struct Program;

 protected:
  absl::StatusOr<NamedOutputs> RunAll(const at::Tensor& x) const override;
  absl::StatusOr<at::Tensor> Run(const at::Tensor& x) const override;

 private:
  ExportedProgramModel(std::unique_ptr<Program> program, ModelInfo info, at::Device device,
                       const Numerics& numerics);
  // Load / LoadTemplate: the program at `path`, its weights from `weights_path` when
  // not empty.
  static absl::StatusOr<std::shared_ptr<ExportedProgramModel>> LoadFrom(
      const std::string& path, const std::string& weights_path, const std::string& device,
      const Numerics& numerics, bool verify_crc);
  // One pass of the graph on a batch inside the program's range.
  NamedOutputs Interpret(const at::Tensor& x) const;

  std::unique_ptr<Program> program_;  // constant after construction
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_EXPORTED_PROGRAM_MODEL_H_
