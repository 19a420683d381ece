#include "server/service/tensor_proto.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace modelserver {

absl::StatusOr<HostTensor> FromProto(const modelserving::v1::Tensor& proto) {
  const int dtype = static_cast<int>(proto.dtype());
  if (dtype <= 0 || dtype > static_cast<int>(DType::kBool)) {
    return absl::InvalidArgumentError(
        absl::StrCat("input dtype ", modelserving::v1::DataType_Name(proto.dtype()),
                     dtype == 0 ? " is not set" : " is unknown", ", expected FLOAT32"));
  }
  HostTensor t;
  t.dtype = static_cast<DType>(dtype);
  t.shape.assign(proto.shape().begin(), proto.shape().end());
  if (t.shape.empty()) {
    return absl::InvalidArgumentError("input shape is empty (a scalar), expected [N,C,H,W]");
  }
  RETURN_IF_ERROR(CheckTensorBytes(t.dtype, t.shape, proto.data().size()));
  t.data = proto.data();
  return t;
}

void ToProto(HostTensor t, modelserving::v1::Tensor* proto) {
  proto->mutable_shape()->Assign(t.shape.begin(), t.shape.end());
  proto->set_dtype(static_cast<modelserving::v1::DataType>(t.dtype));
  *proto->mutable_data() = std::move(t.data);
}

absl::StatusOr<std::vector<std::vector<std::pair<int64_t, float>>>> TopK(const HostTensor& output,
                                                                         int k) {
  if (output.dtype != DType::kFloat32 || output.shape.empty() || output.shape.size() > 2) {
    return absl::FailedPreconditionError(
        absl::StrCat("top_k needs a float32 output of shape [N,C] or [C], the model gave ",
                     DTypeName(output.dtype), " ", ShapeString(output.shape)));
  }
  const int64_t rows = output.shape.size() == 2 ? output.shape[0] : 1;
  const int64_t cols = output.shape.back();
  const auto* data = reinterpret_cast<const float*>(output.data.data());
  std::vector<std::vector<std::pair<int64_t, float>>> out(rows);
  std::vector<int64_t> idx(cols);
  std::vector<double> prob(cols);
  const int64_t kk = std::min<int64_t>(k, cols);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = data + r * cols;
    const float mx = cols > 0 ? *std::max_element(row, row + cols) : 0.f;
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += prob[c] = std::exp(static_cast<double>(row[c]) - mx);
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + kk, idx.end(), [&](int64_t a, int64_t b) {
      return row[a] > row[b] || (row[a] == row[b] && a < b);
    });
    for (int64_t j = 0; j < kk; ++j) {
      out[r].emplace_back(idx[j], static_cast<float>(prob[idx[j]] / sum));
    }
  }
  return out;
}

}  // namespace modelserver
