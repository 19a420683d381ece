#ifndef MODELSERVER_COMMON_SCALAR_BYTES_H_
#define MODELSERVER_COMMON_SCALAR_BYTES_H_

#include <cstddef>
#include <cstring>
#include <string>

namespace modelserver {

// Little-endian element bytes of a HostTensor's data (x86-64 and aarch64 are
// little-endian): append one value, read the i-th value of type T.
template <typename T>
void AppendScalar(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

template <typename T>
T ScalarAt(const std::string& data, size_t i) {
  T v;
  std::memcpy(&v, data.data() + i * sizeof(T), sizeof(T));
  return v;
}

}  // namespace modelserver

#endif  // MODELSERVER_COMMON_SCALAR_BYTES_H_
