// model-server: flags, wiring, signals. The only composition root.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "grpc/health/v1/health.pb.h"
#include "server/metrics/http_endpoint.h"
#include "server/metrics/server_metrics.h"
#include "server/model/cpu_block_cache.h"
#include "server/model/device.h"
#include "server/model/placement.h"
#include "server/model/precision.h"
#include "server/sandbox/sandboxed_loader.h"
#include "server/service/admin_auth.h"
#include "server/service/inference_service_impl.h"
#include "server/service/model_service_impl.h"
#include "server/service/rest_gateway.h"
#include "server/serving/load_journal.h"
#include "server/serving/model_registry.h"
#include "server/store/checkpoint_store.h"
#include "server/util/logging.h"
#include "server/util/memory_limit.h"
#include "server/util/worker_pool.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051",
          "gRPC listen address (host:port; port 0 picks one)");
ABSL_FLAG(std::string, http_listen, "0.0.0.0:8000",
          "host:port for the Open Inference Protocol's HTTP/REST binding (/v2/..., and "
          "/metrics); empty: off");
ABSL_FLAG(int, http_header_timeout_seconds, 10,
          "HTTP ports (REST and /metrics): the whole request header must arrive within this "
          "many seconds of the connection's start or of the previous response");
ABSL_FLAG(int, http_body_timeout_seconds, 60,
          "HTTP ports: the whole request body must arrive within this many seconds");
ABSL_FLAG(int, http_idle_timeout_seconds, 5,
          "HTTP ports: how long a keep-alive connection may wait idle for its next request");
ABSL_FLAG(int, http_max_connections, 4096,
          "HTTP ports: open connections per port; more are answered 503 and closed");
ABSL_FLAG(int, http_max_connections_per_client, 256,
          "HTTP ports: open connections per client address; more are answered 503 and closed "
          "(behind a proxy every client has the proxy's address: raise it there)");
ABSL_FLAG(int, http_threads, 16,
          "REST requests that wait on a model (infer, load/unload) handled at once; up to 256 "
          "more wait, beyond that 503 at once. Health and metadata have their own threads");
ABSL_FLAG(std::string, http_port_file, "",
          "if set, the bound HTTP/REST port is written to this file");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9090",
          "Prometheus /metrics HTTP address (host:port; port 0 picks one; empty = off)");
ABSL_FLAG(std::string, admin_token_file, "",
          "file holding the token admin RPCs must present as 'authorization: Bearer <token>'");
ABSL_FLAG(bool, read_only, false, "refuse every admin RPC (PERMISSION_DENIED)");
ABSL_FLAG(bool, insecure_admin, false,
          "without --admin_token_file, accept admin RPCs (upload, load, save, download, unload) "
          "from any peer, not only from this machine's loopback: anyone who reaches the port can "
          "then replace the served models");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate chain; with --tls_key turns TLS on");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)");
ABSL_FLAG(bool, allow_shared_memory, false,
          "Triton's system shared memory extension: same-host clients register POSIX shared "
          "memory objects (admin calls) and pass tensors through them");
ABSL_FLAG(int, max_shared_memory_regions, 64, "most shared memory regions registered at once");
ABSL_FLAG(int64_t, max_shared_memory_bytes, int64_t{8} << 30,
          "most bytes of shared memory registered in all regions together");
ABSL_FLAG(std::string, store, "./model_store", "checkpoint store directory (created if missing)");
ABSL_FLAG(std::string, state_dir, "",
          "this replica's writable state (the load journal that skips a version whose load "
          "killed the process, so one bad publish cannot crash-loop a fleet); default "
          "<store>/.state; use a per-pod emptyDir with a read-only store; 'none' = off");
ABSL_FLAG(std::vector<std::string>, model, {},
          "NAME[=ARCH] to load at startup (newest version); repeatable. ARCH (vgg16, vgg11_bn, "
          "vgg:cfg=...) is used when the version's manifest names none");
ABSL_FLAG(std::string, device, "auto",
          "auto|cpu|cuda|cuda:N. cuda (and auto when there are GPUs) on a machine with several "
          "GPUs loads each model on min(--batch_workers, GPUs) of them, models placed "
          "round-robin, its batch workers spread over the copies");
ABSL_FLAG(std::vector<std::string>, model_devices, {},
          "NAME=DEVICE[,DEVICE...]: the devices a model is loaded on (a copy of its weights on "
          "each, its batch workers spread over them), over --device; e.g. vgg16=cuda:0,cuda:1");
ABSL_FLAG(std::string, precision, "fp32",
          "what models compute in: fp32, bf16 (CPU with AVX512-BF16/AMX, or GPU), fp16 (GPU "
          "only) or int8 (CPU; native VGGs and pickled layer stacks, quantized at load from the "
          "version's calibration.npy); inputs and outputs keep their wire dtype. Per version: "
          "manifest \"precision\"; per model: --model_precision");
ABSL_FLAG(std::vector<std::string>, model_precision, {},
          "NAME=fp32|bf16|fp16|int8[,...]: a model's precision, over its manifest and --precision");
ABSL_FLAG(double, min_int8_agreement, 0.99,
          "precision int8: a version whose int8 model picks the float model's top-1 class on "
          "fewer than this share of its calibration samples is refused (FAILED_PRECONDITION "
          "with the numbers); 0 to 1");
ABSL_FLAG(std::string, memory_format, "auto",
          "auto|contiguous|channels_last: layout of 4-D activations; auto is channels-last for "
          "native VGGs and pickled layer stacks, contiguous for TorchScript");
ABSL_FLAG(bool, trust_torchscript, false,
          "run TorchScript files (and architecture templates) in this process without the safety "
          "checks; by default each loaded version runs in a sandboxed model-worker process (no "
          "files, network or processes; see --max_forward_seconds, --worker_memory_bytes) after "
          "friendly early checks (__setstate__, an allowlist of tensor operators)");
ABSL_FLAG(bool, trust_compiled_models, false,
          "run AOTInductor packages (format AOTI_PACKAGE: native code) in this process; by "
          "default each runs in a sandboxed model-worker process, which needs Landlock");
ABSL_FLAG(std::string, quantized_engine, "",
          "onednn|qnnpack|fbgemm|x86: the int8 kernels quantized models run on (in process and "
          "in every model worker); a model computes Python's int8 outputs on the engine it was "
          "quantized for (torch.backends.quantized.engine when it was made); default: "
          "LibTorch's (onednn on x86 builds without FBGEMM)");
ABSL_FLAG(int, max_forward_seconds, 300,
          "a sandboxed model's forward pass that runs longer is stopped: its worker is killed, "
          "the batch answers DEADLINE_EXCEEDED, the worker restarts");
ABSL_FLAG(int64_t, worker_memory_bytes, 0,
          "memory cap (RLIMIT_DATA) of each sandboxed model worker; past it the batch answers "
          "RESOURCE_EXHAUSTED and the worker restarts; 0 = --memory_limit_bytes / 2");
ABSL_FLAG(int64_t, cpu_block_cache_bytes, -1,
          "freed CPU tensor blocks (>= 256 KiB) kept for the next forward pass of the same "
          "shapes instead of being returned to the kernel (each return costs page faults on "
          "the next batch); -1 = --memory_limit_bytes / 8, 0 = off. A sandboxed worker keeps "
          "a quarter of its own cap");
ABSL_FLAG(std::string, model_worker, "",
          "the model-worker binary that runs sandboxed models; empty = beside model-server");
ABSL_FLAG(int, intra_op_threads, 0,
          "LibTorch intra-op threads shared by a model's forward passes; 0 = one per core");
ABSL_FLAG(int64_t, max_batch_size, 8, "samples per forward pass; 1 turns batching off");
ABSL_FLAG(int64_t, batch_timeout_us, 2000,
          "longest the oldest queued request waits for others to join its batch, in "
          "microseconds, while another batch of the model runs; a request that finds no batch "
          "running starts at once (see --batch_wait_when_idle)");
ABSL_FLAG(bool, batch_wait_when_idle, false,
          "every batch waits up to --batch_timeout_us for company, even when no other batch "
          "runs (the behaviour before 0.3: more samples per batch at low load, at the cost of "
          "that wait on every lone request)");
ABSL_FLAG(int64_t, max_queue_size, 64,
          "samples that may wait per model; beyond it Predict answers UNAVAILABLE at once");
ABSL_FLAG(int, batch_workers, 2,
          "forward passes that may run at once per model; they share --intra_op_threads "
          "(one pass alone uses all of them, two at once half each)");
ABSL_FLAG(int64_t, max_message_bytes, 64 << 20, "largest gRPC message received or sent, in bytes");
ABSL_FLAG(int64_t, memory_limit_bytes, 0,
          "memory the server plans with; 0 = the cgroup's limit when there is one, else the "
          "machine's memory. One forward pass may take 1/(2 x --batch_workers) of it, Predict "
          "requests held at once 1/16, gRPC's transport buffers 1/8");
ABSL_FLAG(int64_t, max_inflight_request_bytes, 0,
          "Predict request bytes held at once before new ones are refused RESOURCE_EXHAUSTED; "
          "0 = --memory_limit_bytes / 16");
ABSL_FLAG(int64_t, max_input_elements, 16 << 20,
          "input elements per Predict for models whose forward memory cannot be estimated "
          "(TorchScript, pickled layer stacks)");
ABSL_FLAG(int, preprocess_threads, 0,
          "threads that decode and preprocess PredictRequest.images; 0 = one per core");
ABSL_FLAG(int, max_queued_images, 1024,
          "images waiting for a preprocess thread before Predicts with images are refused "
          "RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_image_pixels, 40'000'000,
          "width x height past which an image is refused before it is decoded; a preprocess "
          "thread needs about 7 bytes per pixel of the image it works on");
ABSL_FLAG(int, shutdown_grace_seconds, 10,
          "on SIGTERM/SIGINT, how long in-flight requests may take before the server stops");
ABSL_FLAG(int, poll_store_seconds, 0,
          "every N seconds, load any store version newer than what a model serves; 0 = off");
ABSL_FLAG(int, store_listing_seconds, 10,
          "how often the store listing that status, ListModels and /metrics report is re-read "
          "(they never list the store themselves); 0: only at startup and after this server's "
          "writes");
ABSL_FLAG(int64_t, max_upload_bytes, int64_t{4} << 30, "largest UploadCheckpoint, in bytes");
ABSL_FLAG(std::string, metrics_port_file, "",
          "if set, the bound metrics port is written to this file");
ABSL_FLAG(std::string, port_file, "",
          "if set, the bound gRPC port is written to this file once the server listens");
ABSL_FLAG(std::string, log_level, "info", "debug|info|warning|error");

namespace modelserver {
namespace {

constexpr char kServiceName[] = "modelserving.v1.ModelService";

// --model may be given several times; absl keeps only the last, so collect them
// all first and leave the rest of argv to absl.
std::vector<std::string> TakeModelFlags(int* argc, char** argv) {
  std::vector<std::string> models;
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--model" || arg == "-model") && i + 1 < *argc) {
      models.push_back(argv[++i]);
    } else if (absl::StartsWith(arg, "--model=") || absl::StartsWith(arg, "-model=")) {
      models.push_back(arg.substr(arg.find('=') + 1));
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  return models;
}

void WritePortFile(const std::string& path, int port) {
  if (path.empty()) return;
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << port << "\n";
  std::rename(tmp.c_str(), path.c_str());
}

absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--", flag, ": cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Plaintext, TLS (--tls_cert/--tls_key) or mutual TLS (plus --tls_client_ca).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials() {
  const std::string cert = absl::GetFlag(FLAGS_tls_cert), key = absl::GetFlag(FLAGS_tls_key),
                    ca = absl::GetFlag(FLAGS_tls_client_ca);
  if (cert.empty() && key.empty()) {
    if (!ca.empty())
      return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert/--tls_key");
    return grpc::InsecureServerCredentials();
  }
  if (cert.empty() || key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  grpc::SslServerCredentialsOptions options;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadPem("tls_cert", cert));
  ASSIGN_OR_RETURN(pair.private_key, ReadPem("tls_key", key));
  options.pem_key_cert_pairs.push_back(pair);
  if (!ca.empty()) {
    ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem("tls_client_ca", ca));
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

struct StartupModel {
  std::string name, arch;
};

// --model NAME[=ARCH] values; INVALID_ARGUMENT for a bad name.
absl::StatusOr<std::vector<StartupModel>> ParseStartupModels(const std::vector<std::string>& args) {
  std::vector<StartupModel> startup;
  for (const std::string& m : args) {
    const size_t eq = m.find('=');
    StartupModel s{m.substr(0, eq), eq == std::string::npos ? "" : m.substr(eq + 1)};
    if (absl::Status st = CheckpointStore::ValidateModelName(s.name); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--model ", m, ": ", st.message()));
    }
    startup.push_back(std::move(s));
  }
  return startup;
}

// --memory_limit_bytes, or what the cgroup or machine allows (logged once).
int64_t MemoryLimit() {
  static const int64_t limit = [] {
    int64_t flag = absl::GetFlag(FLAGS_memory_limit_bytes);
    std::string source = "--memory_limit_bytes";
    if (flag <= 0) flag = DetectMemoryLimitBytes(&source);
    if (flag <= 0) {
      flag = int64_t{8} << 30;
      source = "a default (no cgroup limit or MemTotal readable)";
    }
    LOG_INFO("memory limit ", flag >> 20, " MiB from ", source);
    return flag;
  }();
  return limit;
}

// --state_dir, or <store>/.state; empty (journal off, logged) when not writable.
std::string StateDir(const std::string& store_root) {
  std::string dir = absl::GetFlag(FLAGS_state_dir);
  if (dir == "none") return "";
  if (dir.empty()) dir = store_root + "/.state";
  if (absl::Status s = LoadJournal(dir).Init(); !s.ok()) {
    LOG_WARNING(s.message(),
                "; crash-loop protection is off (give a writable --state_dir, e.g. an emptyDir)");
    return "";
  }
  return dir;
}

// The registry's options from the batching flags, with metrics observers.
absl::StatusOr<ModelRegistry::Options> RegistryOptions(const CheckpointStore* store,
                                                       const std::string& device,
                                                       ServerMetrics* metrics) {
  ModelRegistry::Options o;
  o.store = store;
  o.device = device;
  o.batching.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  o.batching.batch_timeout = absl::Microseconds(absl::GetFlag(FLAGS_batch_timeout_us));
  o.batching.max_queue_size = absl::GetFlag(FLAGS_max_queue_size);
  o.batching.num_workers = absl::GetFlag(FLAGS_batch_workers);
  o.batching.wait_when_idle = absl::GetFlag(FLAGS_batch_wait_when_idle);
  o.batching.max_batch_forward_bytes =
      MemoryLimit() / (2 * std::max(1, absl::GetFlag(FLAGS_batch_workers)));
  o.intra_op_threads = IntraOpThreads();
  o.trust_torchscript = absl::GetFlag(FLAGS_trust_torchscript);
  if (!o.trust_torchscript || !absl::GetFlag(FLAGS_trust_compiled_models)) {
    SandboxLoaderOptions so;
    so.worker_path = absl::GetFlag(FLAGS_model_worker);
    if (so.worker_path.empty()) so.worker_path = DefaultWorkerPath();
    if (access(so.worker_path.c_str(), X_OK) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the model worker ", so.worker_path,
          " is not there (it runs TorchScript models and compiled packages in a sandbox; give "
          "--model_worker, or --trust_torchscript and --trust_compiled_models to run them in "
          "process)"));
    }
    so.max_forward = absl::Seconds(std::max(1, absl::GetFlag(FLAGS_max_forward_seconds)));
    const int64_t cap = absl::GetFlag(FLAGS_worker_memory_bytes);
    so.memory_bytes = static_cast<uint64_t>(cap > 0 ? cap : MemoryLimit() / 2);
    so.threads = o.intra_op_threads;
    so.channels = o.batching.num_workers;
    so.quantized_engine = absl::GetFlag(FLAGS_quantized_engine);
    so.trust_compiled_models = absl::GetFlag(FLAGS_trust_compiled_models);
    if (metrics != nullptr) {
      so.on_restart = [metrics](const std::string& model, const std::string& reason) {
        metrics->RecordSandboxRestart(model, reason);
      };
    }
    o.loader = MakeSandboxedLoader(std::move(so));
    o.sandbox_code = true;
  }
  o.listing_interval = absl::Seconds(absl::GetFlag(FLAGS_store_listing_seconds));
  ASSIGN_OR_RETURN(o.precision, ParsePrecision(absl::GetFlag(FLAGS_precision)));
  RETURN_IF_ERROR(CheckPrecisionOnDevice(o.precision, device));
  ASSIGN_OR_RETURN(o.memory_layout, ParseMemoryLayout(absl::GetFlag(FLAGS_memory_format)));
  o.min_int8_agreement = absl::GetFlag(FLAGS_min_int8_agreement);
  if (!(o.min_int8_agreement >= 0 && o.min_int8_agreement <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--min_int8_agreement ", o.min_int8_agreement, " is not in [0, 1]"));
  }
  for (const std::string& item : absl::GetFlag(FLAGS_model_precision)) {
    const std::vector<std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    if (kv.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("--model_precision '", item, "' is not NAME=fp32|bf16|fp16|int8"));
    }
    ASSIGN_OR_RETURN(const Precision p, ParsePrecision(kv[1]));
    RETURN_IF_ERROR(CheckPrecisionOnDevice(p, device));
    o.model_precision[kv[0]] = p;
  }
  ASSIGN_OR_RETURN(const auto model_devices, ParseModelDevices(absl::GetFlag(FLAGS_model_devices)));
  const int gpus = CudaDeviceCount();
  std::string spec = absl::GetFlag(FLAGS_device);
  if (spec == "auto") spec = gpus > 0 ? "cuda" : "cpu";
  for (const auto& [name, devices] : model_devices) {
    RETURN_IF_ERROR(PlaceModel(spec, devices, gpus, 1, 0).status());
  }
  // Models take their places in the order they first load.
  auto ordinals = std::make_shared<std::pair<absl::Mutex, std::map<std::string, int>>>();
  o.place = [spec, model_devices, gpus, workers = o.batching.num_workers,
             ordinals](const std::string& name) -> absl::StatusOr<std::vector<std::string>> {
    int ordinal = 0;
    {
      absl::MutexLock lock(&ordinals->first);
      ordinal =
          ordinals->second.emplace(name, static_cast<int>(ordinals->second.size())).first->second;
    }
    auto it = model_devices.find(name);
    return PlaceModel(spec, it == model_devices.end() ? std::vector<std::string>() : it->second,
                      gpus, workers, ordinal);
  };
  o.state_dir = StateDir(store->root());
  if (o.batching.max_batch_size < 1 || o.batching.max_queue_size < 1 ||
      o.batching.num_workers < 1 || absl::GetFlag(FLAGS_batch_timeout_us) < 0) {
    return absl::InvalidArgumentError(
        "--max_batch_size, --max_queue_size and --batch_workers must be >= 1, "
        "--batch_timeout_us >= 0");
  }
  o.on_load = [metrics](const std::string& model, bool ok, double seconds) {
    metrics->RecordLoad(model, ok, seconds);
  };
  o.on_batch = [metrics](const std::string& model, int64_t samples, double seconds) {
    metrics->RecordBatch(model, samples, seconds);
  };
  o.on_queue_wait = [metrics](const std::string& model, double seconds) {
    metrics->RecordQueueWait(model, seconds);
  };
  return o;
}

// The limits both HTTP ports share, from the --http_* flags.
absl::StatusOr<HttpEndpoint::Options> HttpOptions(const std::string& address,
                                                  const std::string& flag) {
  HttpEndpoint::Options o;
  o.address = address;
  o.flag = flag;
  o.header_timeout = absl::Seconds(absl::GetFlag(FLAGS_http_header_timeout_seconds));
  o.body_timeout = absl::Seconds(absl::GetFlag(FLAGS_http_body_timeout_seconds));
  o.idle_timeout = absl::Seconds(absl::GetFlag(FLAGS_http_idle_timeout_seconds));
  o.max_connections = absl::GetFlag(FLAGS_http_max_connections);
  o.max_connections_per_client = absl::GetFlag(FLAGS_http_max_connections_per_client);
  o.blocking_threads = absl::GetFlag(FLAGS_http_threads);
  if (o.header_timeout <= absl::ZeroDuration() || o.body_timeout <= absl::ZeroDuration() ||
      o.idle_timeout <= absl::ZeroDuration() || o.max_connections < 1 ||
      o.max_connections_per_client < 1 || o.blocking_threads < 1) {
    return absl::InvalidArgumentError(
        "--http_header_timeout_seconds, --http_body_timeout_seconds, --http_idle_timeout_seconds, "
        "--http_max_connections, --http_max_connections_per_client and --http_threads must be "
        ">= 1");
  }
  return o;
}

// As many descriptors as the hard limit allows: every open connection, on each
// port, holds one.
void RaiseDescriptorLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &r);
  }
}

// Gauges read from the registry at each scrape; the /metrics listener when
// --metrics_listen is set.
absl::Status StartMetrics(ServerMetrics* metrics, const ModelRegistry* registry) {
  metrics->SetBuildInfo(MODELSERVER_VERSION, TorchVersion(), TorchHasCuda());
  metrics->set_collect_hook([registry](ServerMetrics* m) {
    for (const auto& [model, depth] : registry->QueueDepths()) m->SetQueueDepth(model, depth);
    if (auto models = registry->List(); models.ok()) {
      for (const ModelStatusInfo& s : *models) {
        m->SetServing(s.model_name, s.serving_version, s.state == ModelState::kReady);
        m->SetDeviceMemory(s.model_name, s.state == ModelState::kReady ? s.parameter_bytes : 0);
      }
    }
  });
  if (absl::Status gpu = metrics->EnableGpuMetrics(); gpu.ok()) {
    LOG_INFO("GPU metrics through NVML (", GpuMetrics::kDefaultLibrary, ")");
  } else {
    LOG_INFO("no GPU metrics: ", gpu.message());
  }
  const std::string addr = absl::GetFlag(FLAGS_metrics_listen);
  if (addr.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(HttpEndpoint::Options options, HttpOptions(addr, "--metrics_listen"));
  RETURN_IF_ERROR(metrics->StartHttp(std::move(options)));
  WritePortFile(absl::GetFlag(FLAGS_metrics_port_file), metrics->http_port());
  return absl::OkStatus();
}

absl::StatusOr<ModelServiceImpl::Options> ServiceOptions(ServerMetrics* metrics) {
  ModelServiceImpl::Options o;
  o.max_upload_bytes = static_cast<uint64_t>(absl::GetFlag(FLAGS_max_upload_bytes));
  o.max_inflight_request_bytes = absl::GetFlag(FLAGS_max_inflight_request_bytes);
  if (o.max_inflight_request_bytes <= 0) o.max_inflight_request_bytes = MemoryLimit() / 16;
  o.max_input_elements = absl::GetFlag(FLAGS_max_input_elements);
  o.image_limits.max_pixels = absl::GetFlag(FLAGS_max_image_pixels);
  if (o.image_limits.max_pixels < 1) {
    return absl::InvalidArgumentError("--max_image_pixels must be at least 1");
  }
  o.metrics = metrics;
  std::string token;
  if (const std::string f = absl::GetFlag(FLAGS_admin_token_file); !f.empty()) {
    ASSIGN_OR_RETURN(token, AdminAuth::ReadTokenFile(f));
  }
  o.auth = AdminAuth(token, absl::GetFlag(FLAGS_read_only), absl::GetFlag(FLAGS_insecure_admin));
  if (o.auth.insecure()) {
    LOG_WARNING(
        "--insecure_admin without --admin_token_file: any peer that reaches the listener may "
        "upload, load, save, download and unload models; use it only on a trusted network");
  } else if (!o.auth.remote_admin_allowed() && !absl::GetFlag(FLAGS_read_only)) {
    LOG_INFO("admin RPCs are accepted from loopback peers only (no --admin_token_file)");
  }
  return o;
}

// The gRPC server with `service`, health and reflection, listening on --listen;
// *port is the bound port.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartGrpc(const std::vector<grpc::Service*>& services,
                                                        int* port) {
  // Reflection describes what the generated descriptor pool holds: this links the
  // health service's descriptors in (the service itself is gRPC's), so grpcurl and
  // buf curl can describe and call grpc.health.v1.Health.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, ServerCredentials());
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), credentials, port);
  const int64_t max_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<int64_t>(max_bytes, INT32_MAX)));
  builder.SetMaxSendMessageSize(static_cast<int>(std::min<int64_t>(max_bytes, INT32_MAX)));
  // Against idle, slow and flooding peers (the transport is event-driven, so a
  // connection costs memory, not a thread): a connection must finish its
  // handshake in 10 s, holds at most 256 streams at once (more are refused),
  // is closed after 5 idle minutes and recycled after 30 (a minute of grace for
  // calls in flight); the server pings a silent peer every minute and drops it
  // after 20 s without an answer; a peer pinging more than every 10 s without
  // data is told to go away after two strikes.
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 256);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, 5 * 60'000);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, 30 * 60'000);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, 60'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  // Bounds what gRPC's transport buffers for requests being received.
  grpc::ResourceQuota quota("model-server");
  quota.Resize(static_cast<size_t>(MemoryLimit() / 16));
  builder.SetResourceQuota(quota);
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || *port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", absl::GetFlag(FLAGS_listen)));
  }
  return server;
}

// The Open Inference Protocol's HTTP/REST binding on --http_listen (null when
// empty), calling the gRPC front door in process; /metrics is served there too.
absl::StatusOr<std::unique_ptr<HttpEndpoint>> StartRest(grpc::Server* server,
                                                        ServerMetrics* metrics,
                                                        const AdminAuth& auth) {
  const std::string address = absl::GetFlag(FLAGS_http_listen);
  if (address.empty()) return nullptr;
  const int64_t max_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(std::min<int64_t>(max_bytes, INT32_MAX)));
  args.SetMaxSendMessageSize(static_cast<int>(std::min<int64_t>(max_bytes, INT32_MAX)));
  std::shared_ptr<grpc::Channel> channel = server->InProcessChannel(args);
  ASSIGN_OR_RETURN(HttpEndpoint::Options options, HttpOptions(address, "--http_listen"));
  options.max_body_bytes = static_cast<size_t>(max_bytes);
  // Bodies read or handled at once: the Predict budget's share.
  options.max_inflight_body_bytes = static_cast<size_t>(
      std::max<int64_t>(max_bytes, absl::GetFlag(FLAGS_max_inflight_request_bytes) > 0
                                       ? absl::GetFlag(FLAGS_max_inflight_request_bytes)
                                       : MemoryLimit() / 16));
  HttpRouter router;
  AddMetricsRoutes(&router, [metrics] { return metrics->Serialize(); });
  AddOpenInferenceRoutes(&router, channel, auth, static_cast<size_t>(max_bytes));
  ASSIGN_OR_RETURN(std::unique_ptr<HttpEndpoint> rest,
                   HttpEndpoint::Start(std::move(options), std::move(router)));
  WritePortFile(absl::GetFlag(FLAGS_http_port_file), rest->port());
  LOG_INFO("Open Inference Protocol HTTP/REST on port ", rest->port(), " (", address, ")");
  return rest;
}

// The health service's names: liveness "", readiness kServiceName (every startup
// model READY) and one per model. Thread-safe.
class HealthReporter {
 public:
  HealthReporter(grpc::HealthCheckServiceInterface* health,
                 const std::vector<StartupModel>& startup)
      : health_(health) {
    for (const StartupModel& s : startup) not_ready_.insert(s.name);
    startup_ = not_ready_;
    health_->SetServingStatus("", true);
    health_->SetServingStatus(kServiceName, not_ready_.empty());
  }

  // The registry's ready listener: readiness follows the live state, so a
  // startup model that is unloaded or fails turns it NOT_SERVING again.
  void OnModel(const std::string& name, bool ready) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    health_->SetServingStatus(name, ready);
    if (startup_.count(name) != 0) {
      if (ready) {
        not_ready_.erase(name);
      } else {
        not_ready_.insert(name);
      }
    }
    health_->SetServingStatus(kServiceName, not_ready_.empty());
  }

  // Every name NOT_SERVING at once, for good.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    health_->Shutdown();
  }

 private:
  grpc::HealthCheckServiceInterface* const health_;
  absl::Mutex mu_;
  std::set<std::string> startup_ ABSL_GUARDED_BY(mu_);    // the --model names
  std::set<std::string> not_ready_ ABSL_GUARDED_BY(mu_);  // of those, not READY now
};

// Blocks SIGTERM and SIGINT in every thread (call before any thread starts);
// WaitForShutdownSignal then takes them.
sigset_t BlockShutdownSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

// The drain: NOT_SERVING at once, keep serving the grace period (so load
// balancers stop sending before the listener closes), then close the listener
// and finish every accepted request (queued ones included); past a second grace
// period gRPC cancels what is left.
void Drain(int sig, HealthReporter* health, ModelServiceImpl* service, grpc::Server* server,
           ServerMetrics* metrics, HttpEndpoint* rest) {
  const int grace = absl::GetFlag(FLAGS_shutdown_grace_seconds);
  LOG_INFO("received ", sig == SIGTERM ? "SIGTERM" : "SIGINT",
           "; health NOT_SERVING, draining for ", grace, " s");
  health->Shutdown();
  absl::SleepFor(absl::Seconds(grace));
  LOG_INFO("grace period over; closing the listener, finishing accepted requests");
  service->StartShutdown();
  if (!service->WaitIdle(absl::Seconds(grace))) {
    LOG_WARNING("requests still running after the drain; cancelling them");
  }
  if (rest != nullptr) rest->Stop();  // its calls go through the gRPC server
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(grace));
  metrics->StopHttp();
}

// Stops the registry and the startup loader, waiting at most --shutdown_grace_seconds
// for a model load still in progress (a large parse): past it the process exits
// at once (nothing is being served any more; a load leaves nothing half-written).
void StopLoads(ModelRegistry* registry, std::thread* loader) {
  std::promise<void> done;
  std::future<void> stopped = done.get_future();
  std::thread stopper([registry, loader, done = std::move(done)]() mutable {
    registry->Shutdown();
    loader->join();
    done.set_value();
  });
  const int grace = absl::GetFlag(FLAGS_shutdown_grace_seconds);
  if (stopped.wait_for(std::chrono::seconds(grace + 1)) != std::future_status::ready) {
    LOG_WARNING("a model load is still running after ", grace + 1,
                " s; exiting without waiting for it");
    std::fflush(stderr);
    std::_Exit(0);
  }
  stopper.join();
}

// Everything from the parsed flags to exit; 2 for a configuration error, 1 when
// the listener cannot start.
int Serve(const std::vector<StartupModel>& startup, sigset_t signals) {
  RaiseDescriptorLimit();
  SetIntraOpThreads(absl::GetFlag(FLAGS_intra_op_threads));
  if (absl::Status s = SetQuantizedEngine(absl::GetFlag(FLAGS_quantized_engine)); !s.ok()) {
    LOG_ERROR("--quantized_engine: ", s.message());
    return 2;
  }
  // Installed even with the cache off (0): its allocator enforces the forward-pass
  // memory budgets of exported programs.
  const int64_t cache = absl::GetFlag(FLAGS_cpu_block_cache_bytes);
  InstallCpuBlockCache(static_cast<uint64_t>(cache > 0    ? cache
                                             : cache == 0 ? 0
                                                          : MemoryLimit() / 8));
  auto device = ResolveDevice(absl::GetFlag(FLAGS_device));
  if (device.ok()) ConfigureDevice(*device);
  auto store = CheckpointStore::Create({absl::GetFlag(FLAGS_store), /*create_root=*/true});
  ServerMetrics metrics;
  absl::StatusOr<ModelRegistry::Options> registry_options =
      !device.ok()  ? device.status()
      : !store.ok() ? store.status()
                    : RegistryOptions(store->get(), *device, &metrics);
  if (!registry_options.ok()) {
    LOG_ERROR(registry_options.status().message());
    return 2;
  }
  ModelRegistry registry(*registry_options);
  absl::StatusOr<ModelServiceImpl::Options> service_options = ServiceOptions(&metrics);
  if (absl::Status s = StartMetrics(&metrics, &registry); !s.ok() || !service_options.ok()) {
    LOG_ERROR((s.ok() ? service_options.status() : s).message());
    return 2;
  }
  const int removed = (*store)->RemoveStaleStaging(absl::Hours(1));
  if (removed > 0) LOG_INFO("removed ", removed, " stale staging directories from the store");
  // Decodes Predict's images; outlives the service (its tasks finish RPCs).
  const int preprocess_threads = absl::GetFlag(FLAGS_preprocess_threads);
  WorkerPool image_pool(preprocess_threads > 0
                            ? preprocess_threads
                            : std::max(1, static_cast<int>(std::thread::hardware_concurrency())),
                        static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_max_queued_images))));
  service_options->image_pool = &image_pool;
  ModelServiceImpl service(&registry, store->get(), *service_options);
  // Registered shared memory regions; closed after the server stops.
  std::unique_ptr<SharedMemoryRegions> shared_memory;
  if (absl::GetFlag(FLAGS_allow_shared_memory)) {
    shared_memory = std::make_unique<SharedMemoryRegions>(SharedMemoryRegions::Options{
        std::max(0, absl::GetFlag(FLAGS_max_shared_memory_regions)),
        static_cast<uint64_t>(std::max<int64_t>(0, absl::GetFlag(FLAGS_max_shared_memory_bytes)))});
    LOG_INFO("system shared memory on (--allow_shared_memory): up to ",
             absl::GetFlag(FLAGS_max_shared_memory_regions), " regions, ",
             absl::GetFlag(FLAGS_max_shared_memory_bytes), " bytes");
  }
  InferenceServiceImpl::Options v2_options;
  v2_options.shared_memory = shared_memory.get();
  v2_options.max_message_bytes =
      static_cast<uint64_t>(std::max<int64_t>(0, absl::GetFlag(FLAGS_max_message_bytes)));
  for (const StartupModel& s : startup) v2_options.startup_models.push_back(s.name);
  v2_options.server_version = MODELSERVER_VERSION;
  InferenceServiceImpl v2(&service, &registry, v2_options);  // Open Inference Protocol
  int port = 0;
  absl::StatusOr<std::unique_ptr<grpc::Server>> server = StartGrpc({&service, &v2}, &port);
  if (!server.ok()) {
    LOG_ERROR(server.status().message());
    return server.status().code() == absl::StatusCode::kUnavailable ? 1 : 2;
  }
  {
    grpc::ChannelArguments args;
    const int64_t max_bytes = absl::GetFlag(FLAGS_max_message_bytes);
    args.SetMaxReceiveMessageSize(static_cast<int>(std::min<int64_t>(max_bytes, INT32_MAX)));
    args.SetMaxSendMessageSize(static_cast<int>(std::min<int64_t>(max_bytes, INT32_MAX)));
    v2.set_channel((*server)->InProcessChannel(args));  // ModelStreamInfer's calls
  }
  HealthReporter health((*server)->GetHealthCheckService(), startup);
  absl::StatusOr<std::unique_ptr<HttpEndpoint>> rest =
      StartRest(server->get(), &metrics, service_options->auth);
  if (!rest.ok()) {
    LOG_ERROR(rest.status().message());
    return rest.status().code() == absl::StatusCode::kUnavailable ? 1 : 2;
  }
  registry.set_ready_listener(
      [&health](const std::string& name, bool ready) { health.OnModel(name, ready); });
  LOG_INFO("model-server listening on port ", port, " (", absl::GetFlag(FLAGS_listen), "), store ",
           (*store)->root(), ", device ", *device, ", batching up to ",
           registry_options->batching.max_batch_size, " samples / ",
           absl::GetFlag(FLAGS_batch_timeout_us), " us, queue ",
           registry_options->batching.max_queue_size, ", ", registry_options->batching.num_workers,
           " worker(s); ", TorchBuildSummary());
  WritePortFile(absl::GetFlag(FLAGS_port_file), port);
  // Startup models load in the background of a listening server, so liveness
  // answers while readiness waits for them.
  std::thread loader([&] {
    for (const StartupModel& s : startup) (void)registry.Load(s.name, s.arch, /*version=*/0);
  });
  if (absl::GetFlag(FLAGS_poll_store_seconds) > 0) {
    registry.StartPolling(absl::Seconds(absl::GetFlag(FLAGS_poll_store_seconds)));
  }
  int sig = 0;
  sigwait(&signals, &sig);
  Drain(sig, &health, &service, server->get(), &metrics, rest->get());
  image_pool.Shutdown();  // decodes still queued finish their calls while the service exists
  StopLoads(&registry, &loader);
  LOG_INFO("model-server stopped");
  return 0;
}

int Run(int argc, char** argv) {
  absl::FlagsUsageConfig usage;  // --help: this file's flags (not "No flags matched")
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "server/main.cc");
  };
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "Serves PyTorch models over gRPC.\n"
      "  model-server --store DIR --model vgg16=vgg16 [--listen 0.0.0.0:50051]");
  std::vector<std::string> model_args = TakeModelFlags(&argc, argv);
  absl::ParseCommandLine(argc, argv);
  for (const std::string& m : absl::GetFlag(FLAGS_model)) model_args.push_back(m);
  LogLevel level;
  if (!ParseLogLevel(absl::GetFlag(FLAGS_log_level), &level)) {
    std::fprintf(stderr, "--log_level must be debug, info, warning or error\n");
    return 2;
  }
  SetLogLevel(level);
  absl::StatusOr<std::vector<StartupModel>> startup = ParseStartupModels(model_args);
  if (!startup.ok()) {
    std::fprintf(stderr, "%s\n", std::string(startup.status().message()).c_str());
    return 2;
  }
  return Serve(*startup, BlockShutdownSignals());
}

}  // namespace
}  // namespace modelserver

int main(int argc, char** argv) { return modelserver::Run(argc, argv); }
