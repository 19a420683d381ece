// libFuzzer target for the code that reads untrusted checkpoint bytes: the zip
// reader, the restricted unpickler and the state-dict pickle parser (all
// torch-free). Build and run with fuzz/run_fuzzer.sh.
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/checkpoint/checkpoint_check.h"
#include "server/checkpoint/state_dict_parser.h"
#include "server/checkpoint/unpickler.h"
#include "server/checkpoint/zip_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  // As a pickle (small limits keep each run fast; the limits' own paths run too).
  modelserver::pickle::UnpicklerOptions options;
  options.max_values = 100000;
  options.max_stack = 10000;
  options.max_memo = 10000;
  (void)modelserver::pickle::Unpickler(options).Parse(bytes);
  // As a zip archive holding a state dict.
  auto zip = modelserver::ZipReader::FromBuffer(bytes);
  if (zip.ok()) {
    for (const auto& e : (*zip)->entries()) (void)(*zip)->ReadToString(e, 1 << 20);
    (void)modelserver::ParseStateDictPickle(**zip, "fuzz", 1 << 20);
  }
  return 0;
}
