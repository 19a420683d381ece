// libFuzzer target for the code that reads untrusted checkpoint bytes, all of
// server/checkpoint/ (torch-free): the zip reader (stored and deflated records),
// the restricted unpickler (state-dict and module-tree options), the state-dict
// parser, the module-tree parser, the TorchScript archive check and the
// torch.export program reader (its JSON alone, and whole archives) and the
// AOTInductor package reader; and the .npy reader (a version's calibration.npy,
// checked at upload and read at an int8 load). Build and run with
// fuzz/run_fuzzer.sh.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/npy.h"
#include "server/checkpoint/aoti_package.h"
#include "server/checkpoint/checkpoint_check.h"
#include "server/checkpoint/exported_program.h"
#include "server/checkpoint/module_tree.h"
#include "server/checkpoint/state_dict_parser.h"
#include "server/checkpoint/torchscript_archive.h"
#include "server/checkpoint/unpickler.h"
#include "server/checkpoint/zip_reader.h"
#include "server/checkpoint/zip_writer.h"

namespace {

// Small limits keep each run fast; the limits' own paths run too.
modelserver::pickle::UnpicklerOptions Small(modelserver::pickle::UnpicklerOptions o) {
  o.max_values = 100000;
  o.max_stack = 10000;
  o.max_memo = 10000;
  return o;
}

// The bytes as a PT2 archive's weights config (data/weights/model_weights_config.json)
// beside a minimal program and two weight records, so that mutated configs reach their
// parser (inside a fuzzed zip, a mutated record fails its CRC first).
void AsWeightsConfig(const std::string& bytes, const modelserver::exported::ReadLimits& limits) {
  static const std::string kProgram =
      R"({"schema_version": {"major": 8, "minor": 2}, "graph_module": {"graph": )"
      R"({"inputs": [], "outputs": [], "nodes": []}, "signature": )"
      R"({"input_specs": [], "output_specs": []}}})";
  const int fd = memfd_create("fuzz-pt2", MFD_CLOEXEC);
  if (fd < 0) return;
  const std::string weight(64, '\x01');
  modelserver::ZipWriter w(fd);
  bool ok =
      w.Add("archive/archive_format", "pt2", 3).ok() &&
      w.Add("archive/models/model.json", kProgram.data(), kProgram.size()).ok() &&
      w.Add("archive/data/weights/model_weights_config.json", bytes.data(), bytes.size()).ok() &&
      w.Add("archive/data/weights/weight_0", weight.data(), weight.size()).ok() &&
      w.Add("archive/data/weights/weight_1", weight.data(), 60).ok() && w.Finish().ok();
  if (ok) {
    auto zip = modelserver::ZipReader::FromFd(fd, 0, w.bytes_written(), "fuzz");
    if (zip.ok()) (void)modelserver::exported::ReadExportedProgram(*std::move(zip), "fuzz", limits);
  }
  close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  // As calibration samples: what parses has exactly the bytes its shape needs.
  if (auto npy = modelserver::ParseNpy(bytes); npy.ok()) {
    if (!modelserver::CheckTensorBytes(npy->dtype, npy->shape, npy->data.size()).ok()) abort();
  }
  // As a pickle: a state dict's, and a torch.save(model) module tree.
  (void)modelserver::pickle::Unpickler(Small({})).Parse(bytes);
  auto tree = modelserver::pickle::Unpickler(Small(modelserver::PickledModuleUnpicklerOptions()))
                  .Parse(bytes);
  if (tree.ok()) (void)modelserver::ParseModuleTree((*tree)->root());
  // As a torch.export program's JSON, then its graph checks.
  modelserver::exported::ReadLimits limits;
  limits.max_json_values = 200000;
  limits.max_nodes = 2000;
  {
    modelserver::exported::ExportedProgram program;
    if (modelserver::exported::ParseProgramJson(bytes, "fuzz", limits, &program).ok()) {
      (void)modelserver::exported::CheckProgram(program, "fuzz", limits);
      (void)modelserver::exported::InputDimSymbol(program, 0, 0);
    }
  }
  AsWeightsConfig(bytes, limits);
  // As a .pt2 archive, either layout.
  if (auto pt2 = modelserver::ZipReader::FromBuffer(bytes); pt2.ok()) {
    (void)modelserver::exported::ClassifyPt2(**pt2);
    (void)modelserver::ReadAotiPackage(**pt2);
    auto program = modelserver::exported::ReadExportedProgram(*std::move(pt2), "fuzz", limits);
    if (program.ok()) (void)modelserver::exported::InputDimSymbol(*program, 0, 0);
  }
  // As a zip archive: every record, a state dict, a module tree, TorchScript.
  auto zip = modelserver::ZipReader::FromBuffer(bytes);
  if (zip.ok()) {
    for (const auto& e : (*zip)->entries()) {
      (void)(*zip)->ReadToString(e, 1 << 20, /*allow_deflated=*/true);
    }
    (void)modelserver::ParseStateDictPickle(**zip, "fuzz", 1 << 20);
    (void)modelserver::ParsePickledModule(**zip, "fuzz");
    (void)modelserver::CheckTorchScriptArchive(**zip, "fuzz");
    (void)modelserver::TorchScriptFormatVersion(**zip);
  }
  return 0;
}
