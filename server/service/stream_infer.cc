#include "server/service/stream_infer.h"

#include <chrono>
#include <utility>

#include "server/service/admin_auth.h"

namespace modelserver {

StreamInferReactor::StreamInferReactor(grpc::CallbackServerContext* context,
                                       std::shared_ptr<inference::GRPCInferenceService::Stub> stub,
                                       std::string gateway_secret)
    : context_(context), stub_(std::move(stub)), gateway_secret_(std::move(gateway_secret)) {
  auto it = context->client_metadata().find("authorization");
  if (it != context->client_metadata().end()) {
    authorization_.assign(it->second.data(), it->second.size());
  }
  Steps steps;
  {
    absl::MutexLock lock(&mu_);
    steps.read = WantReadLocked();
  }
  Run(steps);
}

bool StreamInferReactor::WantReadLocked() {
  if (reading_ || reads_done_ || cancelled_ || calls_.size() >= kMaxInFlight) return false;
  reading_ = true;
  return true;
}

void StreamInferReactor::Run(const Steps& steps) {
  // gRPC's reactions may run inline: nothing here holds mu_, and Finish comes last
  // (OnDone deletes this).
  if (steps.read) StartRead(&next_);
  if (steps.write != nullptr) StartWrite(steps.write);
  if (steps.finish) Finish(steps.status);
}

void StreamInferReactor::OnReadDone(bool ok) {
  Steps steps;
  Call* started = nullptr;
  {
    absl::MutexLock lock(&mu_);
    reading_ = false;
    if (!ok) {  // the client half-closed, or the stream broke
      reads_done_ = true;
    } else {
      auto call = std::make_unique<Call>();
      call->request = std::move(next_);
      next_.Clear();
      if (!authorization_.empty()) call->context.AddMetadata("authorization", authorization_);
      if (!gateway_secret_.empty()) {
        call->context.AddMetadata(AdminAuth::kGatewayHeader, gateway_secret_);
      }
      call->context.set_deadline(context_->deadline());
      started = call.get();
      calls_.push_back(std::move(call));
      steps.read = WantReadLocked();
    }
    if (!ok) ProgressLocked(&steps);
  }
  if (started != nullptr) {
    stub_->async()->ModelInfer(&started->context, &started->request, &started->response,
                               [this, started](grpc::Status s) {
                                 started->status = std::move(s);
                                 OnCallDone(started);
                               });
  }
  Run(steps);
}

void StreamInferReactor::OnCallDone(Call* call) {
  Steps steps;
  {
    absl::MutexLock lock(&mu_);
    call->done = true;
    if (call->status.ok()) {
      *call->answer.mutable_infer_response() = std::move(call->response);
    } else {
      call->answer.set_error_message(call->status.error_message());
      call->answer.mutable_infer_response()->set_id(call->request.id());
      call->answer.mutable_infer_response()->set_model_name(call->request.model_name());
      call->answer.mutable_infer_response()->set_model_version(call->request.model_version());
    }
    ProgressLocked(&steps);
  }
  Run(steps);
}

void StreamInferReactor::OnWriteDone(bool ok) {
  Steps steps;
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    calls_.pop_front();
    if (!ok) cancelled_ = true;  // the client is gone: stop reading, drain the calls
    ProgressLocked(&steps);
    steps.read = WantReadLocked();
  }
  Run(steps);
}

void StreamInferReactor::OnCancel() {
  Steps steps;
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    for (auto& c : calls_) c->context.TryCancel();
    ProgressLocked(&steps);
  }
  Run(steps);
}

void StreamInferReactor::ProgressLocked(Steps* steps) {
  if (finished_ || writing_) return;
  if (cancelled_) {
    // Nothing more is written; wait for the outstanding calls, then finish.
    while (!calls_.empty() && calls_.front()->done) calls_.pop_front();
    if (calls_.empty() && !reading_) {
      finished_ = true;
      steps->finish = true;
      steps->status = grpc::Status::CANCELLED;
    }
    return;
  }
  if (!calls_.empty() && calls_.front()->done) {
    writing_ = true;
    steps->write = &calls_.front()->answer;
    return;
  }
  if (calls_.empty() && reads_done_ && !reading_) {
    finished_ = true;
    steps->finish = true;
    steps->status = grpc::Status::OK;
  }
}

}  // namespace modelserver
