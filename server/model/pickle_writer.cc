#include "server/model/pickle_writer.h"

namespace modelserver {
namespace {

class Out {
 public:
  void Op(char c) { s_.push_back(c); }
  void Int(int64_t v) {
    if (v >= 0 && v < 256) {
      Op('K');
      s_.push_back(static_cast<char>(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      Op('J');
      Le(static_cast<uint32_t>(static_cast<int32_t>(v)), 4);
    } else {
      Op('\x8a');  // LONG1
      s_.push_back(8);
      Le(static_cast<uint64_t>(v), 8);
    }
  }
  void Str(const std::string& v) {
    Op('X');
    Le(v.size(), 4);
    s_ += v;
  }
  void Global(const std::string& module, const std::string& name) {
    Op('c');
    s_ += module + "\n" + name + "\n";
  }
  void Tuple(const std::vector<int64_t>& v) {
    Op('(');
    for (int64_t x : v) Int(x);
    Op('t');
  }
  std::string& str() { return s_; }

 private:
  void Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) s_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  std::string s_;
};

}  // namespace

std::string PickleStateDict(const std::vector<PickledTensor>& tensors) {
  Out o;
  o.Op('\x80');
  o.str().push_back(2);  // PROTO 2
  o.Global("collections", "OrderedDict");
  o.Op(')');
  o.Op('R');
  o.Op('(');
  for (const PickledTensor& t : tensors) {
    o.Str(t.key);
    o.Global("torch._utils", "_rebuild_tensor_v2");
    o.Op('(');
    // Persistent id ('storage', torch.XStorage, key, 'cpu', numel).
    o.Op('(');
    o.Str("storage");
    o.Global("torch", std::string(pickle::StorageTypeName(t.type)));
    o.Str(t.storage_key);
    o.Str("cpu");
    o.Int(t.numel);
    o.Op('t');
    o.Op('Q');
    o.Int(0);  // storage offset
    o.Tuple(t.sizes);
    o.Tuple(t.strides);
    o.Op('\x89');  // requires_grad False
    o.Global("collections", "OrderedDict");
    o.Op(')');
    o.Op('R');  // backward hooks: OrderedDict()
    o.Op('t');
    o.Op('R');
  }
  o.Op('u');  // SETITEMS
  o.Op('.');
  return o.str();
}

}  // namespace modelserver
