#include "server/service/status_mapping.h"

#include <gtest/gtest.h>

namespace modelserver {
namespace {

TEST(StatusMappingTest, KeepsCodeAndMessage) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  const std::pair<absl::Status, grpc::StatusCode> cases[] = {
      {absl::InvalidArgumentError("a"), grpc::StatusCode::INVALID_ARGUMENT},
      {absl::NotFoundError("a"), grpc::StatusCode::NOT_FOUND},
      {absl::FailedPreconditionError("a"), grpc::StatusCode::FAILED_PRECONDITION},
      {absl::UnavailableError("a"), grpc::StatusCode::UNAVAILABLE},
      {absl::ResourceExhaustedError("a"), grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::DataLossError("a"), grpc::StatusCode::DATA_LOSS},
      {absl::AbortedError("a"), grpc::StatusCode::ABORTED},
      {absl::UnauthenticatedError("a"), grpc::StatusCode::UNAUTHENTICATED},
      {absl::PermissionDeniedError("a"), grpc::StatusCode::PERMISSION_DENIED},
      {absl::DeadlineExceededError("a"), grpc::StatusCode::DEADLINE_EXCEEDED},
      {absl::CancelledError("a"), grpc::StatusCode::CANCELLED},
      {absl::UnimplementedError("a"), grpc::StatusCode::UNIMPLEMENTED},
      {absl::InternalError("a"), grpc::StatusCode::INTERNAL},
  };
  for (const auto& [in, code] : cases) {
    grpc::Status out = ToGrpcStatus(in);
    EXPECT_EQ(out.error_code(), code) << in;
    EXPECT_EQ(out.error_message(), "a");
  }
}

}  // namespace
}  // namespace modelserver
