#include "client/model_client.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "common/oip_datatype.h"
#include "common/scalar_bytes.h"
#include "common/sha256.h"

namespace modelserver {

namespace v1 = modelserving::v1;

std::unique_ptr<ModelClient> ModelClient::Create(const Options& options) {
  auto client = std::unique_ptr<ModelClient>(new ModelClient());
  client->options_ = options;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  if (!options.lb_policy.empty()) args.SetLoadBalancingPolicyName(options.lb_policy);
  args.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!options.tls_ca.empty()) {
    auto read = [](const std::string& path) {
      std::ifstream in(path);
      std::stringstream ss;
      ss << in.rdbuf();
      return ss.str();
    };
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = read(options.tls_ca);
    if (!options.tls_cert.empty()) {
      ssl.pem_cert_chain = read(options.tls_cert);
      ssl.pem_private_key = read(options.tls_key);
    }
    creds = grpc::SslCredentials(ssl);
  }
  client->channel_ = grpc::CreateCustomChannel(options.target, creds, args);
  client->stub_ = v1::ModelService::NewStub(client->channel_);
  client->v2_stub_ = inference::GRPCInferenceService::NewStub(client->channel_);
  return client;
}

void ModelClient::Prepare(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() + options_.timeout);
  if (!options_.token.empty()) context->AddMetadata("authorization", "Bearer " + options_.token);
}

grpc::Status ModelClient::Predict(const v1::PredictRequest& request,
                                  v1::PredictResponse* response) const {
  grpc::ClientContext context;
  Prepare(&context);
  if (options_.open_inference) return PredictV2(request, response);
  return stub_->Predict(&context, request, response);
}

grpc::Status ModelClient::PredictV2(const v1::PredictRequest& request,
                                    v1::PredictResponse* response) const {
  grpc::ClientContext context;
  Prepare(&context);
  inference::ModelInferRequest infer;
  infer.set_model_name(request.model_name());
  if (request.version() > 0) infer.set_model_version(std::to_string(request.version()));
  auto* in = infer.add_inputs();
  in->set_name("input");
  if (request.images_size() > 0) {  // BYTES [N]: each a 4-byte little-endian length, then it
    in->set_datatype("BYTES");
    in->add_shape(request.images_size());
    std::string raw;
    for (const std::string& image : request.images()) {
      AppendScalar(&raw, static_cast<uint32_t>(image.size()));
      raw += image;
    }
    infer.add_raw_input_contents(std::move(raw));
  } else {
    in->set_datatype(DatatypeOf(static_cast<DType>(request.input().dtype())));
    in->mutable_shape()->CopyFrom(request.input().shape());
    infer.add_raw_input_contents(request.input().data());
  }
  inference::ModelInferResponse out;
  grpc::Status s = v2_stub_->ModelInfer(&context, infer, &out);
  if (!s.ok()) return s;
  if (out.outputs_size() != 1 || out.raw_output_contents_size() != 1) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "ModelInfer answered without one raw output");
  }
  auto dtype = DTypeFromDatatype(out.outputs(0).datatype());
  if (!dtype.ok()) {
    return grpc::Status(grpc::StatusCode::INTERNAL, std::string(dtype.status().message()));
  }
  response->set_model_name(out.model_name());
  int64_t version = 0;
  if (absl::SimpleAtoi(out.model_version(), &version)) response->set_version(version);
  v1::Tensor* t = response->mutable_output();
  t->set_dtype(static_cast<v1::DataType>(*dtype));
  t->mutable_shape()->CopyFrom(out.outputs(0).shape());
  t->set_data(out.raw_output_contents(0));
  return grpc::Status::OK;
}

grpc::Status ModelClient::ModelInfer(const inference::ModelInferRequest& request,
                                     inference::ModelInferResponse* response) const {
  grpc::ClientContext context;
  Prepare(&context);
  return v2_stub_->ModelInfer(&context, request, response);
}

grpc::Status ModelClient::RegisterSystemSharedMemory(const std::string& name,
                                                     const std::string& key,
                                                     uint64_t byte_size) const {
  grpc::ClientContext context;
  Prepare(&context);
  inference::SystemSharedMemoryRegisterRequest request;
  request.set_name(name);
  request.set_key(key);
  request.set_byte_size(byte_size);
  inference::SystemSharedMemoryRegisterResponse response;
  return v2_stub_->SystemSharedMemoryRegister(&context, request, &response);
}

grpc::Status ModelClient::UnregisterSystemSharedMemory(const std::string& name) const {
  grpc::ClientContext context;
  Prepare(&context);
  inference::SystemSharedMemoryUnregisterRequest request;
  request.set_name(name);
  inference::SystemSharedMemoryUnregisterResponse response;
  return v2_stub_->SystemSharedMemoryUnregister(&context, request, &response);
}

grpc::Status ModelClient::ListModels(v1::ListModelsResponse* response) const {
  grpc::ClientContext context;
  Prepare(&context);
  return stub_->ListModels(&context, v1::ListModelsRequest(), response);
}

grpc::Status ModelClient::GetModelStatus(const std::string& model_name,
                                         v1::ModelStatus* response) const {
  grpc::ClientContext context;
  Prepare(&context);
  v1::GetModelStatusRequest request;
  request.set_model_name(model_name);
  return stub_->GetModelStatus(&context, request, response);
}

grpc::Status ModelClient::SaveModel(const v1::SaveModelRequest& request,
                                    v1::SaveModelResponse* response) const {
  grpc::ClientContext context;
  Prepare(&context);
  return stub_->SaveModel(&context, request, response);
}

grpc::Status ModelClient::LoadModel(const std::string& model_name, int64_t version,
                                    v1::LoadModelResponse* response) const {
  grpc::ClientContext context;
  Prepare(&context);
  v1::LoadModelRequest request;
  request.set_model_name(model_name);
  request.set_version(version);
  return stub_->LoadModel(&context, request, response);
}

grpc::Status ModelClient::UnloadModel(const std::string& model_name,
                                      v1::UnloadModelResponse* response) const {
  grpc::ClientContext context;
  Prepare(&context);
  v1::UnloadModelRequest request;
  request.set_model_name(model_name);
  return stub_->UnloadModel(&context, request, response);
}

namespace {

enum class Part { kCheckpoint, kArchitecture, kCalibration };

// Writes the file as chunk (architecture_chunk, calibration_chunk) messages;
// false once the stream broke.
bool StreamFile(std::ifstream& in, size_t chunk_bytes,
                grpc::ClientWriter<v1::UploadCheckpointRequest>* writer, Part part,
                const std::function<void(uint64_t)>& sent) {
  std::string buf(chunk_bytes, '\0');
  v1::UploadCheckpointRequest message;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    message.Clear();
    if (part == Part::kArchitecture) {
      message.set_architecture_chunk(buf.data(), static_cast<size_t>(n));
    } else if (part == Part::kCalibration) {
      message.set_calibration_chunk(buf.data(), static_cast<size_t>(n));
    } else {
      message.set_chunk(buf.data(), static_cast<size_t>(n));
    }
    if (!writer->Write(message)) return false;
    if (sent) sent(static_cast<uint64_t>(n));
  }
  return true;
}

}  // namespace

grpc::Status ModelClient::Upload(const std::string& path, v1::UploadHeader header,
                                 v1::UploadCheckpointResponse* response, size_t chunk_bytes,
                                 const std::string& architecture_path,
                                 const std::string& calibration_path) const {
  std::ifstream in(path, std::ios::binary);
  if (!in) return grpc::Status(grpc::StatusCode::NOT_FOUND, "cannot open " + path);
  std::ifstream calibration;
  if (!calibration_path.empty()) {
    calibration.open(calibration_path, std::ios::binary);
    if (!calibration) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "cannot open " + calibration_path);
    }
  }
  std::ifstream arch;
  if (!architecture_path.empty()) {
    arch.open(architecture_path, std::ios::binary);
    if (!arch) return grpc::Status(grpc::StatusCode::NOT_FOUND, "cannot open " + architecture_path);
    auto sha = Sha256File(architecture_path);
    if (!sha.ok()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, std::string(sha.status().message()));
    }
    header.set_architecture_sha256(*sha);
  }
  if (header.sha256().empty()) {
    auto sha = Sha256File(path);
    if (!sha.ok())
      return grpc::Status(grpc::StatusCode::NOT_FOUND, std::string(sha.status().message()));
    header.set_sha256(*sha);
  }
  if (header.size_bytes() == 0) {
    header.set_size_bytes(static_cast<int64_t>(std::filesystem::file_size(path)));
  }
  grpc::ClientContext context;
  Prepare(&context);
  auto writer = stub_->UploadCheckpoint(&context, response);
  v1::UploadCheckpointRequest message;
  *message.mutable_header() = header;
  bool ok = writer->Write(message);
  uint64_t done = 0;
  const uint64_t total = static_cast<uint64_t>(header.size_bytes());
  auto sent = [this, &done, total](uint64_t n) {
    done += n;
    if (options_.progress) options_.progress(done, total);
  };
  if (ok && arch.is_open()) {
    ok = StreamFile(arch, chunk_bytes, writer.get(), Part::kArchitecture, nullptr);
  }
  if (ok && calibration.is_open()) {
    ok = StreamFile(calibration, chunk_bytes, writer.get(), Part::kCalibration, nullptr);
  }
  if (ok) ok = StreamFile(in, chunk_bytes, writer.get(), Part::kCheckpoint, sent);
  if (ok) writer->WritesDone();
  return writer->Finish();
}

grpc::Status ModelClient::Download(const std::string& model_name, int64_t version,
                                   const std::string& out_path, v1::DownloadHeader* header) const {
  grpc::ClientContext context;
  Prepare(&context);
  v1::DownloadCheckpointRequest request;
  request.set_model_name(model_name);
  request.set_version(version);
  auto reader = stub_->DownloadCheckpoint(&context, request);
  const std::string tmp = out_path + ".part";
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  Sha256 sha;
  v1::DownloadCheckpointResponse message;
  bool have_header = false;
  uint64_t done = 0;
  while (reader->Read(&message)) {
    if (message.has_header()) {
      *header = message.header();
      have_header = true;
    } else {
      out.write(message.chunk().data(), static_cast<std::streamsize>(message.chunk().size()));
      sha.Update(message.chunk());
      done += message.chunk().size();
      if (options_.progress) {
        options_.progress(done, static_cast<uint64_t>(std::max<int64_t>(0, header->size_bytes())));
      }
    }
  }
  grpc::Status s = reader->Finish();
  out.close();
  if (s.ok() &&
      (!have_header || (!header->sha256().empty() && sha.HexDigest() != header->sha256()))) {
    s = grpc::Status(grpc::StatusCode::DATA_LOSS,
                     "downloaded bytes do not match the header sha256");
  }
  if (!s.ok() || !out) {
    std::remove(tmp.c_str());
    return s.ok() ? grpc::Status(grpc::StatusCode::INTERNAL, "cannot write " + out_path) : s;
  }
  std::rename(tmp.c_str(), out_path.c_str());
  return s;
}

v1::PredictRequest MakePredictRequest(const std::string& model_name, const HostTensor& input,
                                      int top_k, int64_t version) {
  v1::PredictRequest request;
  request.set_model_name(model_name);
  request.set_version(version);
  request.set_top_k(top_k);
  v1::Tensor* t = request.mutable_input();
  t->mutable_shape()->Assign(input.shape.begin(), input.shape.end());
  t->set_dtype(static_cast<v1::DataType>(input.dtype));
  t->set_data(input.data);
  return request;
}

HostTensor OutputTensor(const v1::PredictResponse& response) {
  HostTensor t;
  t.dtype = static_cast<DType>(response.output().dtype());
  t.shape.assign(response.output().shape().begin(), response.output().shape().end());
  t.data = response.output().data();
  return t;
}

const char* StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK:
      return "OK";
    case grpc::CANCELLED:
      return "CANCELLED";
    case grpc::UNKNOWN:
      return "UNKNOWN";
    case grpc::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::ABORTED:
      return "ABORTED";
    case grpc::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::INTERNAL:
      return "INTERNAL";
    case grpc::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "OTHER";
  }
}

}  // namespace modelserver
