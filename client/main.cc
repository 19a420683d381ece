// model-client: predict, list, status against a model-server.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/load_generator.h"
#include "client/model_client.h"
#include "common/npy.h"

ABSL_FLAG(std::string, target, "localhost:50051", "server address host:port");
ABSL_FLAG(std::string, model, "", "model name (predict)");
ABSL_FLAG(int64_t, version, 0, "model version; 0 = the serving version");
ABSL_FLAG(std::string, input, "", "predict: input tensor as a .npy file");
ABSL_FLAG(std::string, shape, "1,3,224,224",
          "predict: random float32 input of this shape when "
          "--input is not given");
ABSL_FLAG(int, seed, 0, "predict: seed of the random input");
ABSL_FLAG(std::vector<std::string>, image, {},
          "predict/bench: an encoded image (JPEG, PNG, WebP) sent instead of a tensor; repeat "
          "--image for several (one sample each); the server preprocesses them");
ABSL_FLAG(std::string, preprocess, "",
          "upload: how images become the model's input, a JSON object such as "
          "'{\"resize\": 256, \"crop\": 224, \"mean\": [0.485, 0.456, 0.406], "
          "\"std\": [0.229, 0.224, 0.225], \"interpolation\": \"bilinear\"}'");
ABSL_FLAG(int, top_k, 5, "predict: classes to print per sample (0 = none)");
ABSL_FLAG(std::string, output, "", "predict: write the output tensor to this .npy file");
ABSL_FLAG(std::string, output_name, "",
          "predict: the output to return from a model that gives several (a tuple's "
          "\"output1\", a dict's key); default the first");
ABSL_FLAG(int, timeout_ms, 60000, "deadline of each call");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA that signed the server certificate (turns TLS on)");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate, for mutual TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, token, "", "admin token (else --token_file, else $MODEL_SERVER_TOKEN)");
ABSL_FLAG(std::string, token_file, "", "file holding the admin token");
ABSL_FLAG(int64_t, max_message_bytes, 64 << 20, "largest message sent or received");
ABSL_FLAG(std::vector<std::string>, concurrency, std::vector<std::string>({"1", "4", "16"}),
          "bench: closed-loop concurrency levels, swept in order");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10), "bench: measured time per level");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(2), "bench: unmeasured time before each level");
ABSL_FLAG(int64_t, batch, 1, "bench: samples per request");
ABSL_FLAG(
    std::string, format, "STATE_DICT",
    "save/upload: STATE_DICT | TORCHSCRIPT | PICKLED_MODULE | EXPORTED_PROGRAM | AOTI_PACKAGE");
ABSL_FLAG(std::string, target_model, "", "save: store the version under this name");
ABSL_FLAG(std::string, architecture, "", "upload: architecture for a state dict (vgg16, ...)");
ABSL_FLAG(std::string, lb, "pick_first",
          "gRPC load balancing over the addresses --target resolves to: pick_first or "
          "round_robin (with dns:///service:port, one connection per replica)");
ABSL_FLAG(bool, force, false, "download: overwrite --file if it exists");
ABSL_FLAG(std::string, protocol, "v1",
          "predict/bench: v1 (modelserving.v1 Predict) or v2 (the Open Inference Protocol's "
          "ModelInfer, KServe v2 / Triton clients' protocol)");
ABSL_FLAG(std::string, labels, "",
          "upload: class labels, one per line (line i = class i), stored as labels.txt; "
          "predict --top_k then prints them");
ABSL_FLAG(std::string, calibration, "",
          "upload: calibration samples for --precision int8, a float32 .npy of [samples, ...] as "
          "the model takes them (numpy.save), stored with the version as calibration.npy");
ABSL_FLAG(std::string, architecture_file, "",
          "upload: an architecture template for a state dict -- a TorchScript module "
          "(torch.jit.script(Net()).save('arch.pt')) -- stored beside it as architecture.pt");
ABSL_FLAG(std::string, precision, "",
          "upload: what the version serves in (fp32, bf16, fp16); empty: the server's --precision");
ABSL_FLAG(std::string, file, "", "upload: the checkpoint file; download: where to write it");
ABSL_FLAG(std::string, quantized_engine, "",
          "upload: the quantized engine an int8 model was made for (onednn, qnnpack, fbgemm, "
          "x86); empty: the server's");
ABSL_FLAG(std::string, shared_memory, "none",
          "bench: none, or system (Triton's system shared memory: inputs and outputs through "
          "POSIX shared memory regions registered with the server, which needs "
          "--allow_shared_memory; same host only)");
ABSL_FLAG(std::string, json, "", "bench: also write the results as JSON to this file");
ABSL_FLAG(std::string, csv, "", "bench: also write the results as CSV to this file");

namespace modelserver {
namespace {

namespace v1 = modelserving::v1;

int Fail(const std::string& what, const grpc::Status& s) {
  std::fprintf(stderr, "%s failed: %s: %s\n", what.c_str(), StatusCodeName(s.error_code()),
               s.error_message().c_str());
  return 1;
}

// --shape as sizes of at least `min` each; false (after a message) otherwise.
bool ParseShape(int64_t min, std::vector<int64_t>* shape) {
  shape->clear();
  for (absl::string_view d : absl::StrSplit(absl::GetFlag(FLAGS_shape), ',')) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(d, &v) || v < min) {
      std::fprintf(stderr, "--shape %s is not a list of sizes\n",
                   absl::GetFlag(FLAGS_shape).c_str());
      return false;
    }
    shape->push_back(v);
  }
  return true;
}

void PrintStatus(const v1::ModelStatus& m) {
  const std::string int8 =
      m.int8_calibration_samples() > 0
          ? absl::StrFormat(" int8_top1_agreement=%.4f int8_worst_cosine=%.6f int8_samples=%d",
                            m.int8_top1_agreement(), m.int8_worst_cosine(),
                            m.int8_calibration_samples())
          : "";
  std::printf(
      "%-24s %-8s serving=%lld store=[%s] format=%s arch=%s device=%s%s%s%s%s%s pinned=%lld%s%s\n",
      m.model_name().c_str(), v1::ModelState_Name(m.state()).c_str(),
      static_cast<long long>(m.serving_version()), absl::StrJoin(m.store_versions(), ",").c_str(),
      v1::CheckpointFormat_Name(m.format()).c_str(), m.architecture().c_str(), m.device().c_str(),
      m.precision().empty() ? "" : " precision=", m.precision().c_str(), int8.c_str(),
      m.memory_format().empty() ? "" : " memory_format=", m.memory_format().c_str(),
      static_cast<long long>(m.pinned_version()),
      m.last_error().empty() ? "" : " error=", m.last_error().c_str());
}

void PrintPrediction(const v1::PredictResponse& response, double ms);

// Reads the file a flag names into *out; false (after saying so) when it cannot.
bool ReadFlagFile(const char* flag, const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s %s\n", flag, path.c_str());
    return false;
  }
  std::stringstream bytes;
  bytes << in.rdbuf();
  *out = bytes.str();
  return true;
}

// Every --image, in order (a repeated flag: absl keeps only the last occurrence,
// so main() collects them before parsing).
std::vector<std::string>& ImagePaths() {
  static std::vector<std::string> paths;
  return paths;
}

// Reads every --image; false (after saying which) when one cannot be read.
bool ReadImages(std::vector<std::string>* images) {
  for (const std::string& path : ImagePaths()) {
    if (!ReadFlagFile("--image", path, &images->emplace_back())) return false;
  }
  return true;
}

int Predict(const ModelClient& client) {
  HostTensor input;
  std::vector<std::string> images;
  if (!ReadImages(&images)) return 2;
  if (!images.empty()) {
    if (!absl::GetFlag(FLAGS_input).empty()) {
      std::fprintf(stderr, "predict: give --input or --image, not both\n");
      return 2;
    }
  } else if (!absl::GetFlag(FLAGS_input).empty()) {
    auto t = ReadNpy(absl::GetFlag(FLAGS_input));
    if (!t.ok()) {
      std::fprintf(stderr, "%s\n", t.status().ToString().c_str());
      return 2;
    }
    input = *std::move(t);
  } else {
    input.dtype = DType::kFloat32;
    if (!ParseShape(0, &input.shape)) return 2;
    std::mt19937 rng(absl::GetFlag(FLAGS_seed));
    std::normal_distribution<float> normal;
    std::vector<float> values(static_cast<size_t>(input.NumElements()));
    for (float& v : values) v = normal(rng);
    input.data.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  }
  v1::PredictResponse response;
  v1::PredictRequest request = MakePredictRequest(
      absl::GetFlag(FLAGS_model), input, absl::GetFlag(FLAGS_top_k), absl::GetFlag(FLAGS_version));
  if (!images.empty()) {
    request.clear_input();
    for (std::string& image : images) request.add_images(std::move(image));
  }
  if (!absl::GetFlag(FLAGS_output_name).empty()) {
    request.add_output_names(absl::GetFlag(FLAGS_output_name));
  }
  const auto start = std::chrono::steady_clock::now();
  grpc::Status s = client.Predict(request, &response);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!s.ok()) return Fail("predict", s);
  PrintPrediction(response, ms);
  if (!absl::GetFlag(FLAGS_output).empty()) {
    if (auto w = WriteNpy(absl::GetFlag(FLAGS_output), OutputTensor(response)); !w.ok()) {
      std::fprintf(stderr, "%s\n", w.ToString().c_str());
      return 1;
    }
  }
  return 0;
}

void PrintPrediction(const v1::PredictResponse& response, double ms) {
  const std::string name = response.output_name().empty() || response.output_name() == "output"
                               ? ""
                               : absl::StrCat("'", response.output_name(), "' ");
  std::printf(
      "model %s version %lld: output %s%s in %.1f ms\n", response.model_name().c_str(),
      static_cast<long long>(response.version()), name.c_str(),
      ShapeString({response.output().shape().begin(), response.output().shape().end()}).c_str(),
      ms);
  const int images = static_cast<int>(ImagePaths().size());
  for (int i = 0; i < response.top_k_size(); ++i) {
    if (i < images) {
      std::printf("%s:", ImagePaths()[static_cast<size_t>(i)].c_str());
    } else {
      std::printf("sample %d:", i);
    }
    for (const auto& c : response.top_k(i).classes()) {
      if (c.label().empty()) {
        std::printf(" %lld (%.4f)", static_cast<long long>(c.index()), c.probability());
      } else {
        std::printf(" %s (%.4f)", c.label().c_str(), c.probability());
      }
    }
    std::printf("\n");
  }
}

// --shape for bench is the per-sample shape; a leading batch size is allowed and ignored
// when it is the only difference ("1,3,224,224" and "3,224,224" both work).
int Bench(const ModelClient& client) {
  LoadOptions o;
  o.model = absl::GetFlag(FLAGS_model);
  o.concurrency.clear();
  for (const std::string& c : absl::GetFlag(FLAGS_concurrency)) {
    int v = 0;
    if (!absl::SimpleAtoi(c, &v) || v < 1) {
      std::fprintf(stderr, "--concurrency must list positive integers, got '%s'\n", c.c_str());
      return 2;
    }
    o.concurrency.push_back(v);
  }
  o.duration = absl::GetFlag(FLAGS_duration);
  o.warmup = absl::GetFlag(FLAGS_warmup);
  o.batch = absl::GetFlag(FLAGS_batch);
  o.top_k = absl::GetFlag(FLAGS_top_k);
  o.seed = static_cast<uint32_t>(absl::GetFlag(FLAGS_seed));
  if (!ReadImages(&o.images)) return 2;
  if (!ParseShape(1, &o.sample_shape)) return 2;
  if (o.sample_shape.size() == 4 && o.sample_shape[0] == 1)
    o.sample_shape.erase(o.sample_shape.begin());
  const std::string shm = absl::AsciiStrToLower(absl::GetFlag(FLAGS_shared_memory));
  if (shm != "none" && shm != "system") {
    std::fprintf(stderr, "--shared_memory '%s' is not none or system\n", shm.c_str());
    return 2;
  }
  o.shared_memory = shm == "system";
  if (o.shared_memory && !o.images.empty()) {
    std::fprintf(stderr, "--shared_memory system sends tensors, not --image files\n");
    return 2;
  }
  if (o.batch < 1 || o.duration <= absl::ZeroDuration()) {
    std::fprintf(stderr, "--batch must be >= 1 and --duration > 0\n");
    return 2;
  }
  std::printf("bench: model %s, %lld x [%s] per request%s, warmup %s, duration %s per level\n",
              o.model.c_str(), static_cast<long long>(o.batch),
              absl::StrJoin(o.sample_shape, ",").c_str(),
              o.shared_memory ? " through system shared memory" : "",
              absl::FormatDuration(o.warmup).c_str(), absl::FormatDuration(o.duration).c_str());
  std::vector<LevelResult> results = RunLoad(client, o);
  std::printf("%s", FormatTable(results).c_str());
  if (!absl::GetFlag(FLAGS_json).empty())
    std::ofstream(absl::GetFlag(FLAGS_json)) << FormatJson(results);
  if (!absl::GetFlag(FLAGS_csv).empty())
    std::ofstream(absl::GetFlag(FLAGS_csv)) << FormatCsv(results);
  int64_t errors = 0;
  for (const LevelResult& r : results) {
    for (const auto& [k, v] : r.errors) errors += v;
  }
  if (errors > 0) {
    std::fprintf(stderr, "bench: %lld requests failed\n", static_cast<long long>(errors));
    return 1;
  }
  return 0;
}

// A progress line on stderr for uploads and downloads when it is a terminal
// (nothing when piped): percent, bytes, rate, time left.
std::function<void(uint64_t, uint64_t)> ProgressBar() {
  if (!isatty(STDERR_FILENO)) return nullptr;
  const auto start = std::chrono::steady_clock::now();
  return [start](uint64_t done, uint64_t total) {
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double mb = static_cast<double>(done) / 1e6, rate = s > 0 ? mb / s : 0;
    const double pct =
        total > 0 ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 0;
    const double eta =
        rate > 0 && total > done ? (static_cast<double>(total - done) / 1e6) / rate : 0;
    std::fprintf(stderr, "\r%5.1f%%  %.1f / %.1f MB  %.1f MB/s  ETA %.0f s   ", pct, mb,
                 static_cast<double>(total) / 1e6, rate, eta);
    if (done >= total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  };
}

// The client options from the connection, protocol and token flags; false
// (after a message) for a bad --protocol or when --token_file cannot be read.
bool ClientOptions(ModelClient::Options* options) {
  options->target = absl::GetFlag(FLAGS_target);
  options->timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  options->max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options->tls_ca = absl::GetFlag(FLAGS_tls_ca);
  options->tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options->tls_key = absl::GetFlag(FLAGS_tls_key);
  const std::string protocol = absl::AsciiStrToLower(absl::GetFlag(FLAGS_protocol));
  if (protocol != "v1" && protocol != "v2") {
    std::fprintf(stderr, "--protocol '%s' is not v1 or v2\n", protocol.c_str());
    return false;
  }
  options->open_inference = protocol == "v2";
  options->lb_policy = absl::GetFlag(FLAGS_lb);
  options->progress = ProgressBar();
  if (options->lb_policy != "pick_first" && options->lb_policy != "round_robin") {
    std::fprintf(stderr, "--lb '%s' is not pick_first or round_robin\n",
                 options->lb_policy.c_str());
    return false;
  }
  options->token = absl::GetFlag(FLAGS_token);
  if (options->token.empty() && !absl::GetFlag(FLAGS_token_file).empty()) {
    if (!ReadFlagFile("--token_file", absl::GetFlag(FLAGS_token_file), &options->token)) {
      return false;
    }
    options->token = std::string(absl::StripAsciiWhitespace(options->token));
  }
  if (options->token.empty()) {
    if (const char* env = std::getenv("MODEL_SERVER_TOKEN"); env != nullptr) options->token = env;
  }
  return true;
}

// What a command gets: the client, its model name (the first argument, else
// --model; may be empty) and --format.
struct Command {
  const ModelClient& client;
  std::string name;
  std::string model;
  v1::CheckpointFormat format;

  bool NeedModel() const {
    if (model.empty()) std::fprintf(stderr, "%s needs a model name\n", name.c_str());
    return !model.empty();
  }
  bool NeedModelAndFile() const {
    if (model.empty() || absl::GetFlag(FLAGS_file).empty()) {
      std::fprintf(stderr, "%s needs a model name and --file\n", name.c_str());
      return false;
    }
    return true;
  }
};

int Save(const Command& c) {
  if (!c.NeedModel()) return 2;
  v1::SaveModelRequest req;
  req.set_model_name(c.model);
  req.set_format(c.format);
  req.set_target_model_name(absl::GetFlag(FLAGS_target_model));
  v1::SaveModelResponse resp;
  grpc::Status s = c.client.SaveModel(req, &resp);
  if (!s.ok()) return Fail("save", s);
  std::printf("saved %s version %lld (%s, %lld bytes, sha256 %s)\n", resp.model_name().c_str(),
              static_cast<long long>(resp.version()),
              v1::CheckpointFormat_Name(resp.format()).c_str(),
              static_cast<long long>(resp.size_bytes()), resp.sha256().c_str());
  return 0;
}

int LoadOrUnload(const Command& c) {
  if (!c.NeedModel()) return 2;
  v1::ModelStatus status;
  grpc::Status s;
  if (c.name == "load") {
    v1::LoadModelResponse resp;
    s = c.client.LoadModel(c.model, absl::GetFlag(FLAGS_version), &resp);
    status = resp.status();
  } else {
    v1::UnloadModelResponse resp;
    s = c.client.UnloadModel(c.model, &resp);
    status = resp.status();
  }
  if (status.model_name().size() > 0) PrintStatus(status);
  if (!s.ok()) return Fail(c.name, s);
  return 0;
}

int Upload(const Command& c) {
  if (!c.NeedModelAndFile()) return 2;
  v1::UploadHeader header;
  header.set_model_name(c.model);
  header.set_format(c.format);
  header.set_architecture(absl::GetFlag(FLAGS_architecture));
  header.set_precision(absl::GetFlag(FLAGS_precision));
  header.set_quantized_engine(absl::GetFlag(FLAGS_quantized_engine));
  header.set_preprocess(absl::GetFlag(FLAGS_preprocess));
  if (const std::string labels = absl::GetFlag(FLAGS_labels); !labels.empty()) {
    if (!ReadFlagFile("--labels", labels, header.mutable_labels())) return 2;
  }
  v1::UploadCheckpointResponse resp;
  grpc::Status s =
      c.client.Upload(absl::GetFlag(FLAGS_file), header, &resp, 1 << 20,
                      absl::GetFlag(FLAGS_architecture_file), absl::GetFlag(FLAGS_calibration));
  if (!s.ok()) return Fail("upload", s);
  std::printf("uploaded %s version %lld (%lld bytes, sha256 %s)\n", resp.model_name().c_str(),
              static_cast<long long>(resp.version()), static_cast<long long>(resp.size_bytes()),
              resp.sha256().c_str());
  return 0;
}

int Download(const Command& c) {
  if (!c.NeedModelAndFile()) return 2;
  if (std::filesystem::exists(absl::GetFlag(FLAGS_file)) && !absl::GetFlag(FLAGS_force)) {
    std::fprintf(stderr, "download: %s exists; pass --force to overwrite it\n",
                 absl::GetFlag(FLAGS_file).c_str());
    return 2;
  }
  v1::DownloadHeader header;
  grpc::Status s =
      c.client.Download(c.model, absl::GetFlag(FLAGS_version), absl::GetFlag(FLAGS_file), &header);
  if (!s.ok()) return Fail("download", s);
  std::printf("downloaded %s version %lld (%s, %s, %lld bytes) to %s\n",
              header.model_name().c_str(), static_cast<long long>(header.version()),
              v1::CheckpointFormat_Name(header.format()).c_str(), header.architecture().c_str(),
              static_cast<long long>(header.size_bytes()), absl::GetFlag(FLAGS_file).c_str());
  return 0;
}

int List(const Command& c) {
  v1::ListModelsResponse response;
  grpc::Status s = c.client.ListModels(&response);
  if (!s.ok()) return Fail("list", s);
  for (const auto& m : response.models()) PrintStatus(m);
  return 0;
}

int Status(const Command& c) {
  v1::ModelStatus response;
  grpc::Status s = c.client.GetModelStatus(c.model, &response);
  if (!s.ok()) return Fail("status", s);
  PrintStatus(response);
  return 0;
}

// predict and bench take the model from --model.
// The model: --model NAME, or NAME after the command as the other commands take it.
int WithModelFlag(const Command& c, int (*command)(const ModelClient&)) {
  if (absl::GetFlag(FLAGS_model).empty() && !c.model.empty()) absl::SetFlag(&FLAGS_model, c.model);
  if (absl::GetFlag(FLAGS_model).empty()) {
    std::fprintf(stderr, "%s needs a model name (NAME or --model NAME)\n", c.name.c_str());
    return 2;
  }
  return command(c.client);
}

constexpr char kUsage[] =
    "Talks to a model-server.\n"
    "  model-client help [COMMAND]\n"
    "  model-client [--target host:port] predict --model NAME [--input x.npy | --shape "
    "1,3,224,224 | --image cat.jpg [--image dog.png ...]] [--top_k 5] [--output y.npy]\n"
    "  model-client [--target host:port] list\n"
    "  model-client [--target host:port] status NAME\n"
    "  model-client [--target host:port] bench --model NAME [--concurrency 1,4,16] [--duration "
    "10s] [--warmup 2s] [--batch 1] [--shape 3,224,224 | --image cat.jpg] [--json F] [--csv F]\n"
    "  model-client save NAME [--format STATE_DICT] [--target_model OTHER]\n"
    "  model-client load NAME [--version N]\n"
    "  model-client unload NAME\n"
    "  model-client upload NAME --file model_weights.pth [--format STATE_DICT]"
    " [--architecture vgg16 | --architecture_file arch.pt] [--precision bf16] [--labels "
    "labels.txt] [--preprocess JSON] [--quantized_engine qnnpack] [--calibration samples.npy]\n"
    "  model-client download NAME [--version N] --file out.pth";

// `model-client help [COMMAND]`: the usage lines (of COMMAND), then where the
// flags are described.
int Help(const std::vector<char*>& args) {
  const std::string want = args.size() > 2 ? args[2] : "";
  for (absl::string_view line : absl::StrSplit(kUsage, '\n')) {
    if (want.empty() || absl::StrContains(line, absl::StrCat(" ", want, " ")) ||
        absl::EndsWith(line, absl::StrCat(" ", want))) {
      std::printf("%s\n", std::string(line).c_str());
    }
  }
  std::printf("Flags: model-client --help\n");
  return 0;
}

int Run(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  // --help lists this file's flags (absl's default matches files named like the
  // program, which would list none).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "client/main.cc");
  };
  absl::SetFlagsUsageConfig(usage);
  // --image may repeat: collect every occurrence, pass the rest to absl.
  std::vector<char*> kept;
  for (int i = 0; i < argc; ++i) {
    const absl::string_view a = argv[i];
    if ((a == "--image" || a == "-image") && i + 1 < argc) {
      ImagePaths().push_back(argv[++i]);
    } else if (absl::StartsWith(a, "--image=") || absl::StartsWith(a, "-image=")) {
      ImagePaths().push_back(std::string(a.substr(a.find('=') + 1)));
    } else {
      kept.push_back(argv[i]);
    }
  }
  std::vector<char*> args = absl::ParseCommandLine(static_cast<int>(kept.size()), kept.data());
  if (args.size() < 2) {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  if (std::string(args[1]) == "help") return Help(args);
  ModelClient::Options options;
  if (!ClientOptions(&options)) return 2;
  auto client = ModelClient::Create(options);
  v1::CheckpointFormat format = v1::CHECKPOINT_FORMAT_UNSPECIFIED;
  if (!v1::CheckpointFormat_Parse(absl::AsciiStrToUpper(absl::GetFlag(FLAGS_format)), &format)) {
    std::fprintf(stderr,
                 "--format %s is not STATE_DICT, TORCHSCRIPT, PICKLED_MODULE, EXPORTED_PROGRAM or "
                 "AOTI_PACKAGE\n",
                 absl::GetFlag(FLAGS_format).c_str());
    return 2;
  }
  const Command c{*client, args[1],
                  args.size() > 2 ? std::string(args[2]) : absl::GetFlag(FLAGS_model), format};
  if (c.name == "predict") return WithModelFlag(c, Predict);
  if (c.name == "bench") return WithModelFlag(c, Bench);
  const std::map<std::string, int (*)(const Command&)> commands = {
      {"save", Save},         {"load", LoadOrUnload}, {"unload", LoadOrUnload}, {"upload", Upload},
      {"download", Download}, {"list", List},         {"status", Status}};
  auto it = commands.find(c.name);
  if (it == commands.end()) {
    std::fprintf(stderr, "unknown command '%s'\n%s\n", c.name.c_str(),
                 absl::ProgramUsageMessage().data());
    return 2;
  }
  return it->second(c);
}

}  // namespace
}  // namespace modelserver

int main(int argc, char** argv) { return modelserver::Run(argc, argv); }
