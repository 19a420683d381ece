#include "server/checkpoint/pickle_writer.h"

#include <cstring>

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
  // collections.OrderedDict()
  void EmptyOrderedDict() {
    Global("collections", "OrderedDict");
    Op(')');
    Op('R');
  }
  void Float(double v) {
    Op('G');
    uint64_t bits;
    std::memcpy(&bits, &v, 8);
    for (int i = 7; i >= 0; --i) s_.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
  }

 private:
  void Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) s_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  std::string s_;
};

void EmitTensor(Out& o, const PickledTensor& t) {
  o.Global("torch._utils", "_rebuild_tensor_v2");
  o.Op('(');
  o.Op('(');
  o.Str("storage");
  o.Global("torch", std::string(pickle::StorageTypeName(t.type)));
  o.Str(t.storage_key);
  o.Str("cpu");
  o.Int(t.numel);
  o.Op('t');
  o.Op('Q');
  o.Int(0);
  o.Tuple(t.sizes);
  o.Tuple(t.strides);
  o.Op('\x89');
  o.EmptyOrderedDict();
  o.Op('t');
  o.Op('R');
}

void Emit(Out& o, const PyValue& v);

// SETITEMS of string keys onto the dict (or __dict__) on top of the stack.
void EmitSetItems(Out& o, const std::vector<std::pair<std::string, PyValue>>& entries) {
  if (entries.empty()) return;
  o.Op('(');
  for (const auto& [k, x] : entries) {
    o.Str(k);
    Emit(o, x);
  }
  o.Op('u');
}

// A tuple, list or set: its items between the opcodes that build it.
void EmitSequence(Out& o, const PyValue& v) {
  using T = PyValue::Type;
  if (v.type == T::kTuple) {
    o.Op('(');
    for (const PyValue& x : v.items) Emit(o, x);
    o.Op('t');
    return;
  }
  if (v.type == T::kSet) o.Global("__builtin__", "set");
  o.Op(']');
  if (!v.items.empty()) {
    o.Op('(');
    for (const PyValue& x : v.items) Emit(o, x);
    o.Op('e');
  }
  if (v.type == T::kSet) {
    o.Op('\x85');  // set(list)
    o.Op('R');
  }
}

// A parameter (_rebuild_parameter of its tensor) or a module (NEWOBJ of its
// class, BUILD with its __dict__).
void EmitObject(Out& o, const PyValue& v) {
  if (v.type == PyValue::Type::kParameter) {
    o.Global("torch._utils", "_rebuild_parameter");
    o.Op('(');
    EmitTensor(o, v.tensor);
    o.Op('\x88');  // requires_grad True, as in Python
    o.EmptyOrderedDict();
    o.Op('t');
    o.Op('R');
    return;
  }
  o.Global(v.module, v.name);
  o.Op(')');
  o.Op('\x81');  // NEWOBJ
  o.Op('}');
  EmitSetItems(o, v.entries);
  o.Op('b');  // BUILD: the __dict__
}

void Emit(Out& o, const PyValue& v) {
  using T = PyValue::Type;
  switch (v.type) {
    case T::kNone:
      o.Op('N');
      return;
    case T::kBool:
      o.Op(v.b ? '\x88' : '\x89');
      return;
    case T::kInt:
      o.Int(v.i);
      return;
    case T::kFloat:
      o.Float(v.f);
      return;
    case T::kStr:
      o.Str(v.s);
      return;
    case T::kTuple:
    case T::kList:
    case T::kSet:
      EmitSequence(o, v);
      return;
    case T::kOrderedDict:
    case T::kDict:
      if (v.type == T::kOrderedDict) {
        o.EmptyOrderedDict();
      } else {
        o.Op('}');
      }
      EmitSetItems(o, v.entries);
      return;
    case T::kTensor:
      EmitTensor(o, v.tensor);
      return;
    case T::kParameter:
    case T::kModule:
      EmitObject(o, v);
      return;
  }
}

}  // namespace

PyValue PyValue::Bool(bool v) {
  PyValue p;
  p.type = Type::kBool;
  p.b = v;
  return p;
}
PyValue PyValue::Int(int64_t v) {
  PyValue p;
  p.type = Type::kInt;
  p.i = v;
  return p;
}
PyValue PyValue::Float(double v) {
  PyValue p;
  p.type = Type::kFloat;
  p.f = v;
  return p;
}
PyValue PyValue::Str(std::string v) {
  PyValue p;
  p.type = Type::kStr;
  p.s = std::move(v);
  return p;
}
PyValue PyValue::Tuple(std::vector<PyValue> v) {
  PyValue p;
  p.type = Type::kTuple;
  p.items = std::move(v);
  return p;
}
PyValue PyValue::IntTuple(std::vector<int64_t> v) {
  std::vector<PyValue> items;
  for (int64_t x : v) items.push_back(Int(x));
  return Tuple(std::move(items));
}

std::string PickleValue(const PyValue& root) {
  Out o;
  o.Op('\x80');
  o.str().push_back(2);
  Emit(o, root);
  o.Op('.');
  return o.str();
}

std::string PickleStateDict(const std::vector<PickledTensor>& tensors) {
  PyValue dict;
  dict.type = PyValue::Type::kOrderedDict;
  for (const PickledTensor& t : tensors) {
    PyValue v;
    v.type = PyValue::Type::kTensor;
    v.tensor = t;
    dict.entries.push_back({t.key, std::move(v)});
  }
  return PickleValue(dict);
}

}  // namespace modelserver
