// libFuzzer target for the parsers of network input (fuzz/run_fuzzer.sh builds it
// with ASan + UBSan). The first byte picks the parser, the rest is its input:
//   0  the REST inference body (JSON + binary-data extension): the rest is
//      "<Inference-Header-Content-Length>\n<body>" (an empty first line: no
//      header); what parses is formatted back as a response (FormatRestInfer)
//   1  a ModelInferRequest (protobuf wire bytes) -> its shared memory inputs read
//      (ReadSharedMemoryInputs) -> PredictRequest (ToPredictRequest), then its
//      tensor (FromProto)
//   2  "<2-byte length><ModelInferRequest><PredictResponse>" -> ModelInferResponse
//      (FromPredictResponse), its shared memory outputs written
//      (WriteSharedMemoryOutputs)
// Shared memory: region "r" is a real 64 KiB POSIX shared memory object, region
// "s" 4 KiB at offset 60 KiB of it.
//   3  a modelserving.v1.Tensor -> HostTensor (Predict's FromProto)
//   4  an HTTP method and path ("<method> <path>") through the REST routes
//   5  a sandboxed model-worker's reply (a worker is as hostile as the file it
//      runs): "<u8 what: even = forward, odd = save><u8 outputs><i32 code>
//      <u64 bytes>", per output "<u8 dtype><u8 rank><u64 bytes><u8 name length>
//      <name><rank x i64 shape>", then the memfd's bytes (little-endian) ->
//      OutputsFromReply / FileFromReply (cap 4 KiB) and StatusFromReply
// Every accepted value must also respect the invariants checked below.
#include <fcntl.h>
#include <google/protobuf/stubs/logging.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "inference/v2/grpc_predict_v2.pb.h"
#include "modelserving/v1/model_service.pb.h"
#include "server/metrics/http_router.h"
#include "server/sandbox/worker_protocol.h"
#include "server/service/oip_convert.h"
#include "server/service/rest_infer.h"
#include "server/service/shared_memory_regions.h"
#include "server/service/tensor_proto.h"

namespace {

using modelserver::HttpRouter;

void Rest(const std::string& in) {
  const size_t eol = in.find('\n');
  const std::string first = eol == std::string::npos ? "" : in.substr(0, eol);
  const std::string body = eol == std::string::npos ? in : in.substr(eol + 1);
  modelserver::RestInferLimits limits;
  limits.max_message_bytes = 1 << 20;
  inference::ModelInferRequest r;
  bool binary = false;
  if (!modelserver::ParseRestInfer(body, first.empty() ? nullptr : &first, limits, &r, &binary)
           .ok()) {
    return;
  }
  size_t raw = 0;
  for (const std::string& c : r.raw_input_contents()) raw += c.size();
  if (r.ByteSizeLong() > limits.max_message_bytes) std::abort();  // the limit holds
  // Binary inputs are spans of the body; JSON values take at most 8 bytes each.
  if (raw > body.size() * 8 + 64) std::abort();
  inference::ModelInferResponse out;
  for (int i = 0; i < r.inputs_size() && i < r.raw_input_contents_size(); ++i) {
    auto* o = out.add_outputs();
    o->set_name(r.inputs(i).name());
    o->set_datatype(r.inputs(i).datatype());
    *out.add_raw_output_contents() = r.raw_input_contents(i);
  }
  size_t json_bytes = 0;
  (void)modelserver::FormatRestInfer(out, binary, &json_bytes);
}

constexpr size_t kRegionBytes = 64 << 10;

const modelserver::SharedMemoryRegions& Regions() {
  static const modelserver::SharedMemoryRegions* regions = [] {
    auto* r = new modelserver::SharedMemoryRegions({/*max_regions=*/2, 2 * kRegionBytes});
    const std::string key = "/wire-fuzzer-" + std::to_string(getpid());
    const int fd = shm_open(key.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || ftruncate(fd, kRegionBytes) != 0) std::abort();
    close(fd);
    if (!r->Register("r", key, 0, kRegionBytes).ok() ||
        !r->Register("s", key, kRegionBytes - 4096, 4096).ok()) {
      std::abort();
    }
    shm_unlink(key.c_str());  // the regions keep their descriptors
    return r;
  }();
  return *regions;
}

void InferToPredict(const std::string& in) {
  inference::ModelInferRequest r;
  if (!r.ParseFromString(in)) return;
  if (modelserver::UsesSharedMemory(r)) {
    const int raw = r.raw_input_contents_size();
    if (!modelserver::ReadSharedMemoryInputs(Regions(), 1 << 20, &r).ok()) return;
    for (int i = raw; i < r.raw_input_contents_size(); ++i) {
      if (r.raw_input_contents(i).size() > kRegionBytes) std::abort();  // never past a region
    }
  }
  modelserving::v1::PredictRequest p;
  if (!modelserver::ToPredictRequest(r, &p).ok()) return;
  if (p.has_input()) (void)modelserver::FromProto(p.input());
}

void PredictToInfer(const std::string& in) {
  if (in.size() < 2) return;
  const size_t n = (static_cast<unsigned char>(in[0]) << 8) | static_cast<unsigned char>(in[1]);
  if (in.size() < 2 + n) return;
  inference::ModelInferRequest r;
  modelserving::v1::PredictResponse p;
  if (!r.ParseFromString(in.substr(2, n)) || !p.ParseFromString(in.substr(2 + n))) return;
  inference::ModelInferResponse out;
  if (!modelserver::FromPredictResponse(r, p, &out).ok()) return;
  (void)modelserver::WriteSharedMemoryOutputs(r, Regions(), &out);
}

void Tensor(const std::string& in) {
  modelserving::v1::Tensor t;
  if (!t.ParseFromString(in)) return;
  absl::StatusOr<modelserver::HostTensor> h = modelserver::FromProto(t);
  if (h.ok() &&
      h->data.size() != static_cast<size_t>(h->NumElements()) * modelserver::DTypeSize(h->dtype)) {
    std::abort();  // an accepted tensor's bytes match its shape
  }
}

void WorkerReply(const std::string& in) {
  // "<u8 what><u8 outputs><i32 code><u64 bytes>", then per output
  // "<u8 dtype><u8 rank><u64 bytes><u8 name length><name><rank x i64 shape>",
  // then the memfd's bytes.
  constexpr size_t kHead = 1 + 1 + 4 + 8;
  if (in.size() < kHead) return;
  modelserver::WorkerReply reply;
  const bool save = (static_cast<uint8_t>(in[0]) & 1) != 0;
  reply.num_outputs = static_cast<uint8_t>(in[1]);
  std::memcpy(&reply.code, in.data() + 2, 4);
  std::memcpy(&reply.bytes, in.data() + 6, 8);
  size_t at = kHead;
  for (uint32_t o = 0; o < reply.num_outputs && o < modelserver::kMaxModelOutputs; ++o) {
    if (at + 11 > in.size()) break;
    modelserver::WorkerOutput& out = reply.outputs[o];
    out.dtype = static_cast<uint8_t>(in[at]);
    out.rank = static_cast<uint8_t>(in[at + 1]);
    std::memcpy(&out.bytes, in.data() + at + 2, 8);
    const size_t name = std::min<size_t>(static_cast<uint8_t>(in[at + 10]), sizeof(out.name));
    at += 11;
    std::memcpy(out.name, in.data() + at, std::min(name, in.size() - at));
    at = std::min(in.size(), at + name);
    for (uint32_t i = 0; i < out.rank && i < modelserver::kWorkerMaxRank && at + 8 <= in.size();
         ++i, at += 8) {
      std::memcpy(&out.shape[i], in.data() + at, 8);
    }
  }
  std::memcpy(reply.message, in.data(), std::min(in.size(), sizeof(reply.message)));
  (void)modelserver::StatusFromReply(reply).ToString();
  const int fd = modelserver::BytesToMemfd("reply", in.substr(at));
  if (fd < 0) return;
  if (save) {
    absl::StatusOr<std::string> file = modelserver::FileFromReply(reply, fd, 4096);
    if (file.ok() && (file->size() != reply.bytes || file->size() > 4096)) std::abort();
  } else {
    absl::StatusOr<std::vector<modelserver::NamedTensor>> outs =
        modelserver::OutputsFromReply(reply, fd);
    if (outs.ok()) {
      if (outs->empty() || outs->size() > modelserver::kMaxModelOutputs) std::abort();
      for (const modelserver::NamedTensor& t : *outs) {
        if (t.name.empty() || t.name.size() > modelserver::kMaxOutputNameBytes ||
            t.tensor.shape.size() > modelserver::kWorkerMaxRank ||
            t.tensor.data.size() != static_cast<size_t>(t.tensor.NumElements()) *
                                        modelserver::DTypeSize(t.tensor.dtype)) {
          std::abort();  // an accepted output's bytes match its shape
        }
      }
    }
  }
  close(fd);
}

const HttpRouter& Routes() {
  static const HttpRouter* router = [] {
    auto* r = new HttpRouter;
    auto none = [](const modelserver::HttpRequest&, modelserver::HttpResponse*) {};
    for (const char* p : {"/v2/health/live", "/v2/models/{name}", "/v2/models/{name}/ready",
                          "/v2/models/{name}/versions/{n}/infer", "/metrics"}) {
      r->Add("GET", p, HttpRouter::kQuick, none);
      r->Add("POST", p, HttpRouter::kBlocking, none);
    }
    return r;
  }();
  return *router;
}

void Route(const std::string& in) {
  const size_t sp = in.find(' ');
  if (sp == std::string::npos) return;
  HttpRouter::Match m = Routes().Find(in.substr(0, sp), in.substr(sp + 1));
  for (const std::string& p : m.params) {
    if (p.empty() || p.size() > 128 || p.find('/') != std::string::npos) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 in strings is logged, not an error
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 6) {
    case 0:
      Rest(in);
      break;
    case 1:
      InferToPredict(in);
      break;
    case 2:
      PredictToInfer(in);
      break;
    case 3:
      Tensor(in);
      break;
    case 4:
      Route(in);
      break;
    default:
      WorkerReply(in);
  }
  return 0;
}
