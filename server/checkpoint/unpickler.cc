#include "server/checkpoint/unpickler.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace modelserver {
namespace pickle {

size_t StorageElementSize(StorageType type) {
  switch (type) {
    case StorageType::kFloat:
      return 4;
    case StorageType::kDouble:
      return 8;
    case StorageType::kHalf:
      return 2;
    case StorageType::kBFloat16:
      return 2;
    case StorageType::kLong:
      return 8;
    case StorageType::kInt:
      return 4;
    case StorageType::kShort:
      return 2;
    case StorageType::kChar:
      return 1;
    case StorageType::kByte:
      return 1;
    case StorageType::kBool:
      return 1;
    case StorageType::kComplexFloat:
      return 8;
    case StorageType::kComplexDouble:
      return 16;
  }
  return 0;
}

namespace {
struct StorageName {
  const char* name;
  StorageType type;
};
constexpr StorageName kStorageNames[] = {
    {"FloatStorage", StorageType::kFloat},
    {"DoubleStorage", StorageType::kDouble},
    {"HalfStorage", StorageType::kHalf},
    {"BFloat16Storage", StorageType::kBFloat16},
    {"LongStorage", StorageType::kLong},
    {"IntStorage", StorageType::kInt},
    {"ShortStorage", StorageType::kShort},
    {"CharStorage", StorageType::kChar},
    {"ByteStorage", StorageType::kByte},
    {"BoolStorage", StorageType::kBool},
    {"ComplexFloatStorage", StorageType::kComplexFloat},
    {"ComplexDoubleStorage", StorageType::kComplexDouble},
};
}  // namespace

absl::string_view StorageTypeName(StorageType type) {
  for (const auto& s : kStorageNames) {
    if (s.type == type) return s.name;
  }
  return "?";
}

absl::string_view KindName(Kind kind) {
  switch (kind) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kBytes:
      return "bytes";
    case Kind::kTuple:
      return "tuple";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kGlobal:
      return "global";
    case Kind::kStorage:
      return "storage";
    case Kind::kTensor:
      return "tensor";
    case Kind::kObject:
      return "object";
  }
  return "?";
}

const Value* Value::Get(absl::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k->kind == Kind::kString && k->s == key) return v;
  }
  return nullptr;
}

bool Unpickler::LookupBuiltinGlobal(absl::string_view module, absl::string_view name,
                                    GlobalKind* kind, StorageType* storage_type) {
  if (module == "collections" && name == "OrderedDict") {
    *kind = GlobalKind::kOrderedDict;
    return true;
  }
  if (module == "_codecs" && name == "encode") {
    *kind = GlobalKind::kCodecsEncode;
    return true;
  }
  if ((module == "builtins" || module == "__builtin__") && name == "set") {
    *kind = GlobalKind::kSet;
    return true;
  }
  if (module == "torch._utils") {
    if (name == "_rebuild_tensor_v2")
      *kind = GlobalKind::kRebuildTensorV2;
    else if (name == "_rebuild_parameter")
      *kind = GlobalKind::kRebuildParameter;
    else if (name == "_rebuild_parameter_with_state")
      *kind = GlobalKind::kRebuildParameterWithState;
    else
      return false;
    return true;
  }
  if (module == "torch") {
    for (const auto& s : kStorageNames) {
      if (name == s.name) {
        *kind = GlobalKind::kStorageType;
        *storage_type = s.type;
        return true;
      }
    }
  }
  return false;
}

namespace internal {

// Opcodes (pickletools names).
enum Op : unsigned char {
  MARK = '(',
  STOP = '.',
  POP = '0',
  POP_MARK = '1',
  DUP = '2',
  BINFLOAT = 'G',
  BININT = 'J',
  BININT1 = 'K',
  BININT2 = 'M',
  NONE = 'N',
  BINPERSID = 'Q',
  REDUCE = 'R',
  BINSTRING = 'T',
  SHORT_BINSTRING = 'U',
  BINUNICODE = 'X',
  APPEND = 'a',
  BUILD = 'b',
  GLOBAL = 'c',
  DICT = 'd',
  EMPTY_DICT = '}',
  APPENDS = 'e',
  BINGET = 'h',
  LONG_BINGET = 'j',
  LIST = 'l',
  EMPTY_LIST = ']',
  BINPUT = 'q',
  LONG_BINPUT = 'r',
  SETITEM = 's',
  TUPLE = 't',
  EMPTY_TUPLE = ')',
  SETITEMS = 'u',
  PROTO = 0x80,
  NEWOBJ = 0x81,
  TUPLE1 = 0x85,
  TUPLE2 = 0x86,
  TUPLE3 = 0x87,
  NEWTRUE = 0x88,
  NEWFALSE = 0x89,
  LONG1 = 0x8a,
  SHORT_BINUNICODE = 0x8c,
  BINUNICODE8 = 0x8d,
  BINBYTES8 = 0x8e,
  STACK_GLOBAL = 0x93,
  MEMOIZE = 0x94,
  FRAME = 0x95,
  BINBYTES = 'B',
  SHORT_BINBYTES = 'C',
};

class Parser {
 public:
  Parser(const UnpicklerOptions& options, absl::string_view data, Unpickled* out)
      : options_(options),
        data_(data),
        out_(out),
        budget_(std::min<uint64_t>(options.max_bytes,
                                   options.bytes_per_pickle_byte * data.size() + (16 << 20))) {}

  absl::Status Run();

 private:
  // Error helpers: messages carry the opcode offset.
  absl::Status Corrupt(absl::string_view what) const {
    return absl::DataLossError(
        absl::StrFormat("pickle is corrupt at byte %d (opcode 0x%02x): %s", op_pos_, op_, what));
  }
  absl::Status Invalid(absl::string_view what) const {
    return absl::FailedPreconditionError(
        absl::StrFormat("pickle refused at byte %d (opcode 0x%02x): %s", op_pos_, op_, what));
  }

  absl::Status Need(size_t n) const {
    if (data_.size() - pos_ < n) {
      return absl::DataLossError(absl::StrFormat(
          "pickle is truncated at byte %d (opcode 0x%02x): needs %d more bytes, %d left", op_pos_,
          op_, n, data_.size() - pos_));
    }
    return absl::OkStatus();
  }
  uint64_t ReadLe(size_t n) {
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) {
      v |= static_cast<uint64_t>(static_cast<unsigned char>(data_[pos_ + k])) << (8 * k);
    }
    pos_ += n;
    return v;
  }

  // Counts `bytes` of memory the unpickled result holds against the budget:
  // RESOURCE_EXHAUSTED past it (copies and containers count, not only values).
  absl::Status Charge(uint64_t bytes) {
    used_ += bytes;
    if (used_ > budget_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("unpickling needs more than ", budget_ >> 20, " MiB for a pickle of ",
                       data_.size(), " bytes (the limit grows with the pickle's size, up to ",
                       options_.max_bytes >> 20, " MiB); the file is not a plausible checkpoint"));
    }
    return absl::OkStatus();
  }
  // The shared None / True / False: no memory per occurrence.
  absl::StatusOr<Value*> Singleton(Kind kind, bool b) {
    Value*& v = kind == Kind::kNone ? none_ : (b ? true_ : false_);
    if (v == nullptr) {
      ASSIGN_OR_RETURN(v, New(kind));
      v->b = b;
    }
    return v;
  }

  absl::StatusOr<Value*> New(Kind kind) {
    RETURN_IF_ERROR(Charge(sizeof(Value)));
    if (out_->arena_.size() >= options_.max_values) {
      return absl::ResourceExhaustedError(
          absl::StrCat("pickle builds more than ", options_.max_values, " values"));
    }
    out_->arena_.emplace_back();
    Value* v = &out_->arena_.back();
    v->kind = kind;
    return v;
  }
  absl::Status Push(Value* v) {
    if (stack_.size() >= options_.max_stack) {
      return absl::ResourceExhaustedError(
          absl::StrCat("pickle stack grows past ", options_.max_stack, " entries"));
    }
    stack_.push_back(v);
    return absl::OkStatus();
  }
  absl::StatusOr<Value*> Pop() {
    if (stack_.size() <= floor()) return Corrupt("pop from an empty stack");
    Value* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  absl::StatusOr<Value*> Top() {
    if (stack_.size() <= floor()) return Corrupt("stack is empty");
    return stack_.back();
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  // Pops everything down to the last MARK, and the mark.
  absl::StatusOr<std::vector<Value*>> PopMark() {
    if (marks_.empty()) return Corrupt("no MARK on the stack");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Value*> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }

  absl::Status Memo(uint64_t index, Value* v) {
    if (index >= options_.max_memo) {
      return absl::ResourceExhaustedError(
          absl::StrCat("pickle memo index ", index, " is over the limit ", options_.max_memo));
    }
    auto [it, inserted] = memo_.emplace(index, v);
    if (!inserted) it->second = v;
    if (inserted) RETURN_IF_ERROR(Charge(64));
    return absl::OkStatus();
  }
  absl::Status Recall(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) return Corrupt(absl::StrCat("memo index ", index, " was never stored"));
    return Push(it->second);
  }

  absl::Status PushString(Kind kind, size_t len_bytes);
  absl::Status PushGlobal(std::string module, std::string name);
  absl::Status DoReduce();
  // The REDUCE calls of allowed globals, on their argument tuple.
  absl::Status ReduceTensor(const std::vector<Value*>& a);
  absl::Status ReduceParameter(const Value& callable, const std::vector<Value*>& a);
  absl::Status ReduceCodecsEncode(const std::vector<Value*>& a);
  absl::Status DoBuild();
  absl::Status DoNewObj();
  absl::Status DoPersistentLoad();
  absl::Status SetItems(Value* dict, const std::vector<Value*>& kv);
  // Per dict: its str ("s" + text) and int ("i" + number) keys -> entry index.
  std::unordered_map<const Value*, std::unordered_map<std::string, size_t>> dict_keys_;
  absl::StatusOr<std::vector<int64_t>> IntTuple(const Value* v, absl::string_view what);

  const UnpicklerOptions& options_;
  absl::string_view data_;
  Unpickled* out_;
  const uint64_t budget_;  // bytes the result may hold (Charge)
  uint64_t used_ = 0;
  Value* none_ = nullptr;
  Value* true_ = nullptr;
  Value* false_ = nullptr;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  unsigned char op_ = 0;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value*> memo_;
  std::unordered_map<std::string, Value*> storages_by_key_;
};

absl::Status Parser::PushString(Kind kind, size_t len_bytes) {
  RETURN_IF_ERROR(Need(len_bytes));
  const uint64_t len = ReadLe(len_bytes);
  if (len > data_.size() - pos_) {
    return absl::DataLossError(absl::StrFormat(
        "pickle is truncated at byte %d (opcode 0x%02x): a string of %d bytes, %d left", op_pos_,
        op_, len, data_.size() - pos_));
  }
  RETURN_IF_ERROR(Charge(len));
  ASSIGN_OR_RETURN(Value * v, New(kind));
  v->s.assign(data_.data() + pos_, static_cast<size_t>(len));
  pos_ += static_cast<size_t>(len);
  return Push(v);
}

absl::Status Parser::PushGlobal(std::string module, std::string name) {
  GlobalKind kind = GlobalKind::kClass;
  StorageType storage_type = StorageType::kFloat;
  const std::string full = absl::StrCat(module, ".", name);
  bool allowed = Unpickler::LookupBuiltinGlobal(module, name, &kind, &storage_type);
  if (!allowed) {
    for (const std::string& c : options_.allowed_classes) {
      if (c == full) {
        allowed = true;
        kind = GlobalKind::kClass;
      }
    }
  }
  if (!allowed) {
    std::string printable;
    for (char c : full) printable.push_back((c >= 0x20 && c < 0x7f) ? c : '?');
    if (printable.size() > 200) printable = printable.substr(0, 200) + "...";
    return Invalid(absl::StrCat("global '", printable,
                                "' is not allowed (nothing is ever called or ", "imported); ",
                                options_.refusal_hint));
  }
  ASSIGN_OR_RETURN(Value * v, New(Kind::kGlobal));
  v->s = full;
  v->global = kind;
  v->storage_type = storage_type;
  return Push(v);
}

absl::StatusOr<std::vector<int64_t>> Parser::IntTuple(const Value* v, absl::string_view what) {
  if (v->kind != Kind::kTuple && v->kind != Kind::kList) {
    return Corrupt(absl::StrCat(what, " is a ", KindName(v->kind), ", expected a tuple of ints"));
  }
  if (v->items.size() > options_.max_rank) {
    return Invalid(absl::StrCat(what, " has ", v->items.size(), " dimensions, over the limit ",
                                options_.max_rank));
  }
  std::vector<int64_t> out;
  for (const Value* x : v->items) {
    if (x->kind != Kind::kInt) {
      return Corrupt(absl::StrCat(what, " holds a ", KindName(x->kind), ", expected ints"));
    }
    out.push_back(x->i);
  }
  return out;
}

absl::Status Parser::DoPersistentLoad() {
  ASSIGN_OR_RETURN(Value * pid, Pop());
  // ('storage', torch.FloatStorage, '0', 'cpu', numel)
  if (pid->kind != Kind::kTuple || pid->items.size() != 5 || pid->items[0]->kind != Kind::kString ||
      pid->items[0]->s != "storage") {
    return Invalid(
        "persistent id is not ('storage', type, key, location, numel); only tensor storages "
        "may be referenced");
  }
  const Value* type = pid->items[1];
  const Value* key = pid->items[2];
  const Value* location = pid->items[3];
  const Value* numel = pid->items[4];
  if (type->kind != Kind::kGlobal || type->global != GlobalKind::kStorageType) {
    return Invalid("persistent id names no storage type (torch.FloatStorage, ...)");
  }
  if (key->kind != Kind::kString || location->kind != Kind::kString || numel->kind != Kind::kInt ||
      numel->i < 0) {
    return Corrupt("persistent id has a bad key, location or element count");
  }
  auto it = storages_by_key_.find(key->s);
  if (it != storages_by_key_.end()) {
    const StorageRef& prev = it->second->storage;
    if (prev.type != type->storage_type || prev.numel != numel->i) {
      return Corrupt(absl::StrCat("storage '", key->s, "' is referenced with two different types"));
    }
    return Push(it->second);
  }
  ASSIGN_OR_RETURN(Value * v, New(Kind::kStorage));
  v->storage.key = key->s;
  v->storage.type = type->storage_type;
  v->storage.location = location->s;
  v->storage.numel = numel->i;
  storages_by_key_[key->s] = v;
  out_->storages_.push_back(v);
  return Push(v);
}

absl::Status Parser::DoReduce() {
  ASSIGN_OR_RETURN(Value * args, Pop());
  ASSIGN_OR_RETURN(Value * callable, Pop());
  if (callable->kind != Kind::kGlobal) {
    return Invalid(absl::StrCat("REDUCE calls a ", KindName(callable->kind), ", not a global"));
  }
  if (args->kind != Kind::kTuple) {
    return Corrupt(absl::StrCat("REDUCE arguments are a ", KindName(args->kind), ", not a tuple"));
  }
  const std::vector<Value*>& a = args->items;
  switch (callable->global) {
    case GlobalKind::kOrderedDict: {
      if (!a.empty()) return Invalid("collections.OrderedDict() is only rebuilt without arguments");
      ASSIGN_OR_RETURN(Value * d, New(Kind::kDict));
      return Push(d);
    }
    case GlobalKind::kRebuildTensorV2:
      return ReduceTensor(a);
    case GlobalKind::kRebuildParameter:
    case GlobalKind::kRebuildParameterWithState:
      return ReduceParameter(*callable, a);
    case GlobalKind::kCodecsEncode:
      return ReduceCodecsEncode(a);
    case GlobalKind::kSet: {
      // set() or set(list): kept as a list of its items.
      if (a.size() > 1 || (a.size() == 1 && a[0]->kind != Kind::kList)) {
        return Invalid("set is only rebuilt from a list");
      }
      if (a.size() == 1) RETURN_IF_ERROR(Charge(a[0]->items.size() * sizeof(Value*)));
      ASSIGN_OR_RETURN(Value * list, New(Kind::kList));
      if (a.size() == 1) list->items = a[0]->items;
      return Push(list);
    }
    case GlobalKind::kStorageType:
    case GlobalKind::kClass:
      break;
  }
  return Invalid(absl::StrCat("'", callable->s, "' cannot be called by REDUCE"));
}

absl::Status Parser::ReduceTensor(const std::vector<Value*>& a) {
  // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  if (a.size() != 6 && a.size() != 7) {
    return Corrupt(absl::StrCat("_rebuild_tensor_v2 takes 6 or 7 arguments, got ", a.size()));
  }
  if (a[0]->kind != Kind::kStorage) {
    return Corrupt(absl::StrCat("_rebuild_tensor_v2 storage is a ", KindName(a[0]->kind)));
  }
  if (a[1]->kind != Kind::kInt || a[1]->i < 0) {
    return Corrupt("_rebuild_tensor_v2 storage offset is not a non-negative int");
  }
  if (a[4]->kind != Kind::kBool) return Corrupt("_rebuild_tensor_v2 requires_grad is not a bool");
  if (a[5]->kind != Kind::kDict || !a[5]->entries.empty()) {
    return Invalid("tensor has backward hooks; only plain tensors are loaded");
  }
  ASSIGN_OR_RETURN(Value * t, New(Kind::kTensor));
  t->tensor.storage = a[0];
  t->tensor.offset = a[1]->i;
  ASSIGN_OR_RETURN(t->tensor.sizes, IntTuple(a[2], "tensor size"));
  ASSIGN_OR_RETURN(t->tensor.strides, IntTuple(a[3], "tensor stride"));
  if (t->tensor.sizes.size() != t->tensor.strides.size()) {
    return Corrupt("tensor size and stride have different lengths");
  }
  t->tensor.requires_grad = a[4]->b;
  return Push(t);
}

absl::Status Parser::ReduceParameter(const Value& callable, const std::vector<Value*>& a) {
  // (data, requires_grad, backward_hooks[, state])
  const size_t want = callable.global == GlobalKind::kRebuildParameter ? 3 : 4;
  if (a.size() != want) {
    return Corrupt(absl::StrCat(callable.s, " takes ", want, " arguments, got ", a.size()));
  }
  if (a[0]->kind != Kind::kTensor) return Corrupt("parameter data is not a tensor");
  if (a[1]->kind != Kind::kBool) return Corrupt("parameter requires_grad is not a bool");
  if (a[2]->kind != Kind::kDict || !a[2]->entries.empty()) {
    return Invalid("parameter has backward hooks; only plain parameters are loaded");
  }
  ASSIGN_OR_RETURN(Value * t, New(Kind::kTensor));
  t->tensor = a[0]->tensor;
  t->tensor.requires_grad = a[1]->b;
  t->tensor.is_parameter = true;
  return Push(t);
}

absl::Status Parser::ReduceCodecsEncode(const std::vector<Value*>& a) {
  // Protocol 2 writes bytes b as _codecs.encode(b.decode('latin1'), 'latin1').
  if (a.size() != 2 || a[0]->kind != Kind::kString || a[1]->kind != Kind::kString ||
      (a[1]->s != "latin1" && a[1]->s != "latin-1")) {
    return Invalid("_codecs.encode is only accepted as encode(str, 'latin1')");
  }
  ASSIGN_OR_RETURN(Value * bytes, New(Kind::kBytes));
  // The string is UTF-8; every code point must fit one latin-1 byte.
  const std::string& u = a[0]->s;
  for (size_t k = 0; k < u.size(); ++k) {
    const auto c = static_cast<unsigned char>(u[k]);
    if (c < 0x80) {
      bytes->s.push_back(static_cast<char>(c));
    } else if ((c == 0xC2 || c == 0xC3) && k + 1 < u.size()) {
      bytes->s.push_back(static_cast<char>(((c & 0x1F) << 6) | (u[++k] & 0x3F)));
    } else {
      return Corrupt("_codecs.encode argument is not latin-1 text");
    }
  }
  return Push(bytes);
}

absl::Status Parser::DoNewObj() {
  ASSIGN_OR_RETURN(Value * args, Pop());
  ASSIGN_OR_RETURN(Value * cls, Pop());
  if (cls->kind != Kind::kGlobal || cls->global != GlobalKind::kClass) {
    return Invalid(absl::StrCat(
        "NEWOBJ of ", cls->kind == Kind::kGlobal ? cls->s : std::string(KindName(cls->kind)),
        ", which is not an allowed class"));
  }
  if (args->kind != Kind::kTuple) return Corrupt("NEWOBJ arguments are not a tuple");
  ASSIGN_OR_RETURN(Value * obj, New(Kind::kObject));
  obj->cls = cls;
  obj->args = args->items;
  return Push(obj);
}

absl::Status Parser::DoBuild() {
  ASSIGN_OR_RETURN(Value * state, Pop());
  ASSIGN_OR_RETURN(Value * target, Top());
  if (target->kind != Kind::kDict && target->kind != Kind::kObject) {
    return Invalid(absl::StrCat("BUILD on a ", KindName(target->kind),
                                "; only OrderedDicts and allowed classes take state"));
  }
  if (state->kind != Kind::kDict && state->kind != Kind::kNone) {
    return Invalid(absl::StrCat("BUILD state is a ", KindName(state->kind), ", expected a dict"));
  }
  if (target->state != nullptr) return Corrupt("BUILD applied twice to one object");
  target->state = state;
  return absl::OkStatus();
}

absl::Status Parser::SetItems(Value* dict, const std::vector<Value*>& kv) {
  if (dict->kind != Kind::kDict) {
    return Corrupt(absl::StrCat("SETITEM on a ", KindName(dict->kind), ", not a dict"));
  }
  if (kv.size() % 2 != 0) return Corrupt("SETITEMS with an odd number of items");
  // Entries, and each key's index entry.
  RETURN_IF_ERROR(Charge(kv.size() / 2 * (2 * sizeof(Value*) + 64)));
  // A later value for an existing str or int key replaces it (as in Python); a
  // hash index per dict keeps this linear in the number of items.
  std::unordered_map<std::string, size_t>& index = dict_keys_[dict];
  for (size_t k = 0; k < kv.size(); k += 2) {
    Value* key = kv[k];
    if (key->kind != Kind::kString && key->kind != Kind::kInt) {
      dict->entries.emplace_back(key, kv[k + 1]);
      continue;
    }
    std::string id = key->kind == Kind::kString ? "s" + key->s : "i" + std::to_string(key->i);
    auto [it, inserted] = index.emplace(std::move(id), dict->entries.size());
    if (inserted) {
      dict->entries.emplace_back(key, kv[k + 1]);
    } else {
      dict->entries[it->second].second = kv[k + 1];
    }
  }
  return absl::OkStatus();
}

absl::Status Parser::Run() {
  while (true) {
    if (pos_ >= data_.size()) {
      op_pos_ = pos_;
      return absl::DataLossError(
          absl::StrFormat("pickle is truncated: it ends at byte %d without STOP", pos_));
    }
    op_pos_ = pos_;
    op_ = static_cast<unsigned char>(data_[pos_++]);
    switch (op_) {
      case PROTO: {
        RETURN_IF_ERROR(Need(1));
        const uint64_t proto = ReadLe(1);
        if (proto < 2 || proto > 4) {
          return Invalid(absl::StrCat("pickle protocol ", proto,
                                      " is not supported (torch.save writes 2; 2 to 4 are read)"));
        }
        break;
      }
      case FRAME:
        RETURN_IF_ERROR(Need(8));
        ReadLe(8);  // frames are an I/O hint only
        break;
      case STOP: {
        if (!marks_.empty() || stack_.size() != 1) {
          return Corrupt(absl::StrCat("STOP with ", stack_.size(), " values and ", marks_.size(),
                                      " marks on the stack, expected one value"));
        }
        out_->root_ = stack_.back();
        return absl::OkStatus();
      }
      case MARK:
        if (marks_.size() >= options_.max_stack) {
          return absl::ResourceExhaustedError("pickle nests too many MARKs");
        }
        marks_.push_back(stack_.size());
        break;
      case POP:
        RETURN_IF_ERROR(Pop().status());
        break;
      case POP_MARK:
        RETURN_IF_ERROR(PopMark().status());
        break;
      case DUP: {
        ASSIGN_OR_RETURN(Value * v, Top());
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case NONE: {
        ASSIGN_OR_RETURN(Value * v, Singleton(Kind::kNone, false));
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case NEWTRUE:
      case NEWFALSE: {
        ASSIGN_OR_RETURN(Value * v, Singleton(Kind::kBool, op_ == NEWTRUE));
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case BININT:
      case BININT1:
      case BININT2: {
        const size_t n = op_ == BININT ? 4 : op_ == BININT1 ? 1 : 2;
        RETURN_IF_ERROR(Need(n));
        const uint64_t raw = ReadLe(n);
        ASSIGN_OR_RETURN(Value * v, New(Kind::kInt));
        v->i = op_ == BININT ? static_cast<int64_t>(static_cast<int32_t>(raw))
                             : static_cast<int64_t>(raw);
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case LONG1: {
        RETURN_IF_ERROR(Need(1));
        const size_t n = static_cast<size_t>(ReadLe(1));
        if (n > 8) return Invalid(absl::StrCat("integer of ", n, " bytes does not fit in 64 bits"));
        RETURN_IF_ERROR(Need(n));
        uint64_t raw = ReadLe(n);
        if (n > 0 && n < 8 && (raw >> (8 * n - 1)) & 1) raw |= ~uint64_t{0} << (8 * n);
        ASSIGN_OR_RETURN(Value * v, New(Kind::kInt));
        v->i = static_cast<int64_t>(raw);
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case BINFLOAT: {
        RETURN_IF_ERROR(Need(8));
        uint64_t bits = 0;
        for (int k = 0; k < 8; ++k) {
          bits = (bits << 8) | static_cast<unsigned char>(data_[pos_ + k]);  // big-endian
        }
        pos_ += 8;
        ASSIGN_OR_RETURN(Value * v, New(Kind::kFloat));
        std::memcpy(&v->f, &bits, 8);
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case BINUNICODE:
        RETURN_IF_ERROR(PushString(Kind::kString, 4));
        break;
      case SHORT_BINUNICODE:
        RETURN_IF_ERROR(PushString(Kind::kString, 1));
        break;
      case BINUNICODE8:
        RETURN_IF_ERROR(PushString(Kind::kString, 8));
        break;
      case BINSTRING:
        RETURN_IF_ERROR(PushString(Kind::kString, 4));
        break;
      case SHORT_BINSTRING:
        RETURN_IF_ERROR(PushString(Kind::kString, 1));
        break;
      case BINBYTES:
        RETURN_IF_ERROR(PushString(Kind::kBytes, 4));
        break;
      case SHORT_BINBYTES:
        RETURN_IF_ERROR(PushString(Kind::kBytes, 1));
        break;
      case BINBYTES8:
        RETURN_IF_ERROR(PushString(Kind::kBytes, 8));
        break;
      case EMPTY_TUPLE:
      case EMPTY_LIST:
      case EMPTY_DICT: {
        ASSIGN_OR_RETURN(Value * v, New(op_ == EMPTY_TUPLE  ? Kind::kTuple
                                        : op_ == EMPTY_LIST ? Kind::kList
                                                            : Kind::kDict));
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case TUPLE:
      case LIST: {
        ASSIGN_OR_RETURN(std::vector<Value*> items, PopMark());
        RETURN_IF_ERROR(Charge(items.size() * sizeof(Value*)));
        ASSIGN_OR_RETURN(Value * v, New(op_ == TUPLE ? Kind::kTuple : Kind::kList));
        v->items = std::move(items);
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case TUPLE1:
      case TUPLE2:
      case TUPLE3: {
        const size_t n = op_ - TUPLE1 + 1;
        if (stack_.size() < floor() + n) return Corrupt("tuple of more items than the stack holds");
        ASSIGN_OR_RETURN(Value * v, New(Kind::kTuple));
        v->items.assign(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
        stack_.resize(stack_.size() - n);
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case DICT: {
        ASSIGN_OR_RETURN(std::vector<Value*> items, PopMark());
        ASSIGN_OR_RETURN(Value * v, New(Kind::kDict));
        RETURN_IF_ERROR(SetItems(v, items));
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case APPEND: {
        ASSIGN_OR_RETURN(Value * item, Pop());
        ASSIGN_OR_RETURN(Value * list, Top());
        if (list->kind != Kind::kList) return Corrupt("APPEND to something that is not a list");
        RETURN_IF_ERROR(Charge(sizeof(Value*)));
        list->items.push_back(item);
        break;
      }
      case APPENDS: {
        ASSIGN_OR_RETURN(std::vector<Value*> items, PopMark());
        ASSIGN_OR_RETURN(Value * list, Top());
        if (list->kind != Kind::kList) return Corrupt("APPENDS to something that is not a list");
        RETURN_IF_ERROR(Charge(items.size() * sizeof(Value*)));
        list->items.insert(list->items.end(), items.begin(), items.end());
        break;
      }
      case SETITEM: {
        ASSIGN_OR_RETURN(Value * value, Pop());
        ASSIGN_OR_RETURN(Value * key, Pop());
        ASSIGN_OR_RETURN(Value * dict, Top());
        RETURN_IF_ERROR(SetItems(dict, {key, value}));
        break;
      }
      case SETITEMS: {
        ASSIGN_OR_RETURN(std::vector<Value*> items, PopMark());
        ASSIGN_OR_RETURN(Value * dict, Top());
        RETURN_IF_ERROR(SetItems(dict, items));
        break;
      }
      case BINPUT:
      case LONG_BINPUT: {
        const size_t n = op_ == BINPUT ? 1 : 4;
        RETURN_IF_ERROR(Need(n));
        const uint64_t index = ReadLe(n);
        ASSIGN_OR_RETURN(Value * v, Top());
        RETURN_IF_ERROR(Memo(index, v));
        break;
      }
      case MEMOIZE: {
        ASSIGN_OR_RETURN(Value * v, Top());
        RETURN_IF_ERROR(Memo(memo_.size(), v));
        break;
      }
      case BINGET:
      case LONG_BINGET: {
        const size_t n = op_ == BINGET ? 1 : 4;
        RETURN_IF_ERROR(Need(n));
        RETURN_IF_ERROR(Recall(ReadLe(n)));
        break;
      }
      case GLOBAL: {
        // "module\nname\n"
        std::string parts[2];
        for (std::string& part : parts) {
          const size_t nl = data_.find('\n', pos_);
          if (nl == absl::string_view::npos) return Corrupt("GLOBAL without a newline");
          part.assign(data_.data() + pos_, nl - pos_);
          pos_ = nl + 1;
        }
        RETURN_IF_ERROR(PushGlobal(std::move(parts[0]), std::move(parts[1])));
        break;
      }
      case STACK_GLOBAL: {
        ASSIGN_OR_RETURN(Value * name, Pop());
        ASSIGN_OR_RETURN(Value * module, Pop());
        if (name->kind != Kind::kString || module->kind != Kind::kString) {
          return Corrupt("STACK_GLOBAL needs two strings");
        }
        RETURN_IF_ERROR(PushGlobal(module->s, name->s));
        break;
      }
      case REDUCE:
        RETURN_IF_ERROR(DoReduce());
        break;
      case BUILD:
        RETURN_IF_ERROR(DoBuild());
        break;
      case NEWOBJ:
        RETURN_IF_ERROR(DoNewObj());
        break;
      case BINPERSID:
        RETURN_IF_ERROR(DoPersistentLoad());
        break;
      default:
        return Invalid(
            absl::StrFormat("opcode 0x%02x is not supported by this restricted unpickler", op_));
    }
  }
}

}  // namespace internal

absl::StatusOr<std::unique_ptr<Unpickled>> Unpickler::Parse(absl::string_view data) {
  auto out = std::make_unique<Unpickled>();
  internal::Parser parser(options_, data, out.get());
  RETURN_IF_ERROR(parser.Run());
  return out;
}

}  // namespace pickle
}  // namespace modelserver
