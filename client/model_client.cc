#include "client/model_client.h"

namespace modelserver {

namespace v1 = modelserving::v1;

std::unique_ptr<ModelClient> ModelClient::Create(const Options& options) {
  auto client = std::unique_ptr<ModelClient>(new ModelClient());
  client->options_ = options;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  args.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  client->channel_ =
      grpc::CreateCustomChannel(options.target, grpc::InsecureChannelCredentials(), args);
  client->stub_ = v1::ModelService::NewStub(client->channel_);
  return client;
}

void ModelClient::Prepare(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() + options_.timeout);
}

grpc::Status ModelClient::Predict(const v1::PredictRequest& request,
                                  v1::PredictResponse* response) const {
  grpc::ClientContext context;
  Prepare(&context);
  return stub_->Predict(&context, request, response);
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

}  // namespace modelserver
