#include "server/checkpoint/unpickler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "tests/testing/server_process.h"

namespace modelserver::pickle {
namespace {

using ::testing::HasSubstr;

// Builds pickle bytes opcode by opcode.
class P {
 public:
  P& Op(unsigned char c) {
    s_.push_back(static_cast<char>(c));
    return *this;
  }
  P& U8(uint8_t v) { return Op(v); }
  P& Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) Op(static_cast<unsigned char>(v >> (8 * i)));
    return *this;
  }
  P& Proto(int v = 2) { return Op(0x80).U8(static_cast<uint8_t>(v)); }
  P& Int(int32_t v) { return Op('J').Le(static_cast<uint32_t>(v), 4); }
  P& Int1(uint8_t v) { return Op('K').U8(v); }
  P& Str(const std::string& v) {
    Op('X').Le(v.size(), 4);
    s_ += v;
    return *this;
  }
  P& Global(const std::string& m, const std::string& n) {
    Op('c');
    s_ += m + "\n" + n + "\n";
    return *this;
  }
  P& Stop() { return Op('.'); }
  std::string str() const { return s_; }

 private:
  std::string s_;
};

absl::StatusOr<std::unique_ptr<Unpickled>> Parse(const std::string& bytes,
                                                 UnpicklerOptions options = {}) {
  return Unpickler(options).Parse(bytes);
}

TEST(UnpicklerTest, ScalarsAndStrings) {
  const std::string b = P().Proto()
                            .Op('(')
                            .Op('N')
                            .Op(0x88)
                            .Op(0x89)
                            .Int(-5)
                            .Int1(200)
                            .Op('M')
                            .Le(40000, 2)
                            .Op(0x8a)
                            .U8(2)
                            .Le(0xff00, 2)  // LONG1 -256
                            .Op(0x8a)
                            .U8(0)  // LONG1 0
                            .Op('G')
                            .Le(0, 0)
                            .str();
  // BINFLOAT is big-endian: 1.5 = 0x3FF8000000000000.
  std::string f = b;
  const unsigned char one_half[8] = {0x3f, 0xf8, 0, 0, 0, 0, 0, 0};
  f.append(reinterpret_cast<const char*>(one_half), 8);
  f += P().Str("héllo").Op(0x8c).U8(2).str() + "ab" + P().Op('C').U8(3).str() + "xyz" +
       P().Op('t').Stop().str();
  auto r = Parse(f);
  ASSERT_TRUE(r.ok()) << r.status();
  const Value* t = (*r)->root();
  ASSERT_EQ(t->kind, Kind::kTuple);
  ASSERT_EQ(t->items.size(), 12u);
  EXPECT_EQ(t->items[0]->kind, Kind::kNone);
  EXPECT_TRUE(t->items[1]->b);
  EXPECT_FALSE(t->items[2]->b);
  EXPECT_EQ(t->items[3]->i, -5);
  EXPECT_EQ(t->items[4]->i, 200);
  EXPECT_EQ(t->items[5]->i, 40000);
  EXPECT_EQ(t->items[6]->i, -256);
  EXPECT_EQ(t->items[7]->i, 0);
  EXPECT_DOUBLE_EQ(t->items[8]->f, 1.5);
  EXPECT_EQ(t->items[9]->s, "héllo");
  EXPECT_EQ(t->items[10]->s, "ab");
  EXPECT_EQ(t->items[11]->kind, Kind::kBytes);
  EXPECT_EQ(t->items[11]->s, "xyz");
}

TEST(UnpicklerTest, ContainersAndMemo) {
  // [1, 2, 3] memoised, a dict {"k": <the list>, "j": 7}, tuples 1..3, DUP, POP, POP_MARK.
  const std::string b = P().Proto()
                            .Op(']')
                            .Op('q')
                            .U8(0)  // EMPTY_LIST, BINPUT 0
                            .Int1(1)
                            .Op('a')  // APPEND
                            .Op('(')
                            .Int1(2)
                            .Int1(3)
                            .Op('e')  // APPENDS
                            .Op('}')
                            .Op('r')
                            .Le(70000, 4)  // EMPTY_DICT, LONG_BINPUT
                            .Str("k")
                            .Op('h')
                            .U8(0)
                            .Op('s')  // SETITEM k = memo[0]
                            .Op('(')
                            .Str("j")
                            .Int1(7)
                            .Op('u')  // SETITEMS
                            .Op('(')
                            .Int1(9)
                            .Op('1')  // POP_MARK
                            .Int1(1)
                            .Op(0x85)  // TUPLE1
                            .Int1(1)
                            .Int1(2)
                            .Op(0x86)  // TUPLE2
                            .Int1(1)
                            .Int1(2)
                            .Int1(3)
                            .Op(0x87)  // TUPLE3
                            .Op('2')
                            .Op('0')  // DUP, POP
                            .Op('(')
                            .Int1(4)
                            .Op('l')  // LIST
                            .Op('(')
                            .Str("z")
                            .Int1(5)
                            .Op('d')   // DICT
                            .Op(0x94)  // MEMOIZE
                            .Op('j')
                            .Le(70000, 4)  // LONG_BINGET -> the dict
                            .Op(')')       // EMPTY_TUPLE
                            .Op(0x86)      // (dict, ())
                            .Op('(')
                            .str();
  // Wrap everything into one tuple: the stack holds list, dict, t1, t2, t3, list, dict, (dict, ()).
  std::string all =
      P().Proto().Op('(').str() + b.substr(2, b.size() - 3) + P().Op('t').Stop().str();
  auto r = Parse(all);
  ASSERT_TRUE(r.ok()) << r.status();
  const Value* root = (*r)->root();
  ASSERT_EQ(root->items.size(), 8u);
  const Value* list = root->items[0];
  ASSERT_EQ(list->kind, Kind::kList);
  ASSERT_EQ(list->items.size(), 3u);
  EXPECT_EQ(list->items[2]->i, 3);
  const Value* dict = root->items[1];
  ASSERT_EQ(dict->kind, Kind::kDict);
  EXPECT_EQ(dict->Get("k"), list);  // memo keeps identity
  EXPECT_EQ(dict->Get("j")->i, 7);
  EXPECT_EQ(root->items[2]->items.size(), 1u);
  EXPECT_EQ(root->items[3]->items.size(), 2u);
  EXPECT_EQ(root->items[4]->items.size(), 3u);
  EXPECT_EQ(root->items[5]->items[0]->i, 4);
  EXPECT_EQ(root->items[6]->Get("z")->i, 5);
  EXPECT_EQ(root->items[7]->items[0], dict);
}

TEST(UnpicklerTest, PythonPicklesProtocols2And4) {
  for (const char* name : {"plain_p2.pkl", "plain_p4.pkl"}) {
    auto r = Parse(testing::ReadFile(testing::FixturesDir() + "/reader/" + name));
    ASSERT_TRUE(r.ok()) << name << ": " << r.status();
    const Value* root = (*r)->root();
    const Value* a = root->Get("a");
    ASSERT_NE(a, nullptr);
    ASSERT_EQ(a->items.size(), 5u);
    EXPECT_EQ(a->items[1]->i, -2);
    EXPECT_DOUBLE_EQ(a->items[2]->f, 3.5);
    EXPECT_TRUE(a->items[3]->b);
    const Value* b = root->Get("b");
    ASSERT_EQ(b->items.size(), 4u);
    EXPECT_EQ(b->items[0]->s, "x");
    EXPECT_EQ(b->items[1]->kind, Kind::kBytes);
    EXPECT_EQ(b->items[1]->s, "y\xe9z");
    EXPECT_EQ(b->items[2]->i, int64_t{1} << 40);
    EXPECT_EQ(b->items[3]->i, -(int64_t{1} << 40));
  }
}

// OrderedDict with _metadata, a tensor and a parameter, as torch.save writes them.
std::string StateDictPickle() {
  return P()
      .Proto()
      .Global("collections", "OrderedDict")
      .Op('q')
      .U8(0)
      .Op(')')
      .Op('R')
      .Op('(')
      .Str("w")
      .Global("torch._utils", "_rebuild_tensor_v2")
      .Op('(')
      .Op('(')
      .Str("storage")
      .Global("torch", "HalfStorage")
      .Str("0")
      .Str("cpu")
      .Int1(6)
      .Op('t')
      .Op('Q')  // BINPERSID
      .Int1(1)  // offset
      .Int1(2)
      .Int1(2)
      .Op(0x86)  // size (2, 2)
      .Int1(2)
      .Int1(1)
      .Op(0x86)  // stride (2, 1)
      .Op(0x89)  // requires_grad False
      .Op('h')
      .U8(0)
      .Op(')')
      .Op('R')  // OrderedDict()
      .Op('t')
      .Op('R')
      .Str("p")
      .Global("torch._utils", "_rebuild_parameter")
      .Op('(')
      .Global("torch._utils", "_rebuild_tensor_v2")
      .Op('(')
      .Op('(')
      .Str("storage")
      .Global("torch", "HalfStorage")
      .Str("0")
      .Str("cpu")
      .Int1(6)
      .Op('t')
      .Op('Q')
      .Int1(0)
      .Int1(6)
      .Op(0x85)
      .Int1(1)
      .Op(0x85)
      .Op(0x89)
      .Op('h')
      .U8(0)
      .Op(')')
      .Op('R')
      .Op('t')
      .Op('R')
      .Op(0x88)
      .Op('h')
      .U8(0)
      .Op(')')
      .Op('R')
      .Op('t')
      .Op('R')
      .Op('u')  // SETITEMS
      .Op('}')
      .Str("_metadata")
      .Op('h')
      .U8(0)
      .Op(')')
      .Op('R')
      .Op('s')
      .Op('b')  // BUILD
      .Stop()
      .str();
}

TEST(UnpicklerTest, StateDictWithTensorsParametersAndMetadata) {
  auto r = Parse(StateDictPickle());
  ASSERT_TRUE(r.ok()) << r.status();
  const Value* root = (*r)->root();
  ASSERT_EQ(root->kind, Kind::kDict);
  ASSERT_EQ(root->entries.size(), 2u);
  ASSERT_NE(root->state, nullptr);
  EXPECT_NE(root->state->Get("_metadata"), nullptr);
  const Value* w = root->Get("w");
  ASSERT_EQ(w->kind, Kind::kTensor);
  EXPECT_EQ(w->tensor.offset, 1);
  EXPECT_EQ(w->tensor.sizes, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(w->tensor.strides, (std::vector<int64_t>{2, 1}));
  EXPECT_FALSE(w->tensor.is_parameter);
  const Value* p = root->Get("p");
  EXPECT_TRUE(p->tensor.is_parameter);
  EXPECT_TRUE(p->tensor.requires_grad);
  // One storage, shared by both tensors.
  ASSERT_EQ((*r)->storages().size(), 1u);
  EXPECT_EQ(w->tensor.storage, p->tensor.storage);
  EXPECT_EQ((*r)->storages()[0]->storage.type, StorageType::kHalf);
  EXPECT_EQ((*r)->storages()[0]->storage.numel, 6);
}

TEST(UnpicklerTest, RefusesDangerousGlobalsByName) {
  struct Case {
    std::string module, name;
  } cases[] = {{"os", "system"},
               {"posix", "system"},
               {"builtins", "eval"},
               {"subprocess", "Popen"},
               {"torch", "load"},
               {"collections", "defaultdict"},
               {"torchvision.models.vgg", "VGG"}};
  for (const Case& c : cases) {
    // GLOBAL form, as protocol 2 writes it, followed by a REDUCE that must never run.
    const std::string g = P().Proto()
                              .Global(c.module, c.name)
                              .Op('(')
                              .Str("touch /tmp/x")
                              .Op('t')
                              .Op('R')
                              .Stop()
                              .str();
    auto r = Parse(g);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << c.module;
    EXPECT_THAT(std::string(r.status().message()),
                HasSubstr("global '" + c.module + "." + c.name + "' is not allowed"));
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("a state dict may only refer"));
    // STACK_GLOBAL form (protocol 4).
    const std::string s = P().Proto(4).Str(c.module).Str(c.name).Op(0x93).Stop().str();
    r = Parse(s);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.module + "." + c.name));
  }
  auto py = Parse(testing::ReadFile(testing::FixturesDir() + "/reader/os_system.pkl"));
  EXPECT_EQ(py.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(py.status().message()), HasSubstr("system"));
}

TEST(UnpicklerTest, RefusesMisuseOfAllowedGlobals) {
  // A storage type called as a function.
  auto r = Parse(P().Proto().Global("torch", "FloatStorage").Op(')').Op('R').Stop().str());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("cannot be called"));
  // NEWOBJ of a non-class.
  r = Parse(P().Proto().Global("collections", "OrderedDict").Op(')').Op(0x81).Stop().str());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  // A persistent id that is not a storage.
  r = Parse(P().Proto().Op('(').Str("module").Str("x").Op('t').Op('Q').Stop().str());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  // BUILD on a list.
  r = Parse(P().Proto().Op(']').Op('}').Op('b').Stop().str());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  // Unsupported opcodes: INST, EXT1, protocol 5.
  EXPECT_EQ(Parse(P().Proto().Op('i').Stop().str()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Parse(P().Proto().Op(0x82).U8(1).Stop().str()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(Parse(P().Proto(5).Op('N').Stop().str()).status().message()),
              HasSubstr("protocol 5"));
}

TEST(UnpicklerTest, CorruptPicklesAreDataLoss) {
  const std::string good = StateDictPickle();
  // Every truncation of a valid pickle fails cleanly.
  for (size_t n = 0; n < good.size(); ++n) {
    auto r = Parse(good.substr(0, n));
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << n << ": " << r.status();
  }
  struct Case {
    std::string bytes, message;
  } cases[] = {
      {P().Proto().Op('h').U8(3).Stop().str(), "memo index 3 was never stored"},
      {P().Proto().Op('j').Le(0xffffffff, 4).Stop().str(), "never stored"},
      {P().Proto().Op('0').Stop().str(), "empty stack"},
      {P().Proto().Op(0x87).Stop().str(), "more items than the stack"},
      {P().Proto().Op('t').Stop().str(), "no MARK"},
      {P().Proto().Op('N').Op('N').Stop().str(), "STOP with 2 values"},
      {P().Proto().Op('N').str(), "without STOP"},
      {P().Proto().Op('X').Le(1000, 4).str() + "ab", "truncated"},
      {P().Proto().Op('N').Op('N').Op('a').Stop().str(), "APPEND to something that is not a list"},
      {P().Proto().Op('}').Int1(1).Op('s').Stop().str(), "stack is empty"},
      {P().Proto().Op('c').str() + "os", "GLOBAL without a newline"},
      {P().Proto().Op('N').Op(')').Op('R').Stop().str(), "REDUCE calls a None"},
  };
  for (const Case& c : cases) {
    auto r = Parse(c.bytes);
    ASSERT_FALSE(r.ok()) << c.message;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.message));
  }
}

TEST(UnpicklerTest, LimitsAreEnforced) {
  UnpicklerOptions small;
  small.max_values = 10;
  std::string many = P().Proto().Op('(').str();
  for (int i = 0; i < 20; ++i) many += P().Int1(1).str();
  many += P().Op('t').Stop().str();
  EXPECT_EQ(Parse(many, small).status().code(), absl::StatusCode::kResourceExhausted);
  small = UnpicklerOptions();
  small.max_memo = 100;
  EXPECT_EQ(Parse(P().Proto().Op('N').Op('r').Le(1000, 4).Stop().str(), small).status().code(),
            absl::StatusCode::kResourceExhausted);
  small = UnpicklerOptions();
  small.max_stack = 5;
  std::string deep = P().Proto().str();
  for (int i = 0; i < 10; ++i) deep += P().Op('N').str();
  EXPECT_EQ(Parse(deep, small).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(UnpicklerTest, TensorArgumentsAreChecked) {
  auto tensor_with = [](const std::string& size, const std::string& hooks) {
    return P().Proto()
               .Global("torch._utils", "_rebuild_tensor_v2")
               .Op('(')
               .Op('(')
               .Str("storage")
               .Global("torch", "FloatStorage")
               .Str("0")
               .Str("cpu")
               .Int1(4)
               .Op('t')
               .Op('Q')
               .Int1(0)
               .str() +
           size + P().Int1(1).Op(0x85).Op(0x89).str() + hooks + P().Op('t').Op('R').Stop().str();
  };
  const std::string empty_hooks = P().Global("collections", "OrderedDict").Op(')').Op('R').str();
  EXPECT_TRUE(Parse(tensor_with(P().Int1(4).Op(0x85).str(), empty_hooks)).ok());
  // A size that is not a tuple of ints.
  EXPECT_EQ(Parse(tensor_with(P().Str("4").Op(0x85).str(), empty_hooks)).status().code(),
            absl::StatusCode::kDataLoss);
  // Non-empty backward hooks are refused.
  const std::string hooks =
      P().Global("collections", "OrderedDict").Op(')').Op('R').Int1(1).Int1(2).Op('s').str();
  EXPECT_THAT(std::string(Parse(tensor_with(P().Int1(4).Op(0x85).str(), hooks)).status().message()),
              HasSubstr("backward hooks"));
}

TEST(UnpicklerTest, NoneAndBoolsCostNoMemoryPerOccurrence) {
  // 64 MiB of NONE, POP: once 6 GB of values; None is one shared value now.
  P p;
  p.Proto();
  std::string bytes = p.str();
  bytes.reserve(64 << 20);
  while (bytes.size() < (64u << 20))
    bytes +=
        "N0\x88"
        "0";
  bytes += "N.";
  auto r = Parse(bytes);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->root()->kind, Kind::kNone);
}

TEST(UnpicklerTest, MemoryIsBudgetedByThePicklesSize) {
  // EMPTY_LIST, POP over and over: each a new value.
  P p;
  p.Proto();
  std::string bytes = p.str();
  while (bytes.size() < (8u << 20)) bytes += "]0";
  bytes += "N.";
  auto r = Parse(bytes);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("MiB"));
}

TEST(UnpicklerTest, CopiesOfAMemoisedListCount) {
  // A list of 20,000 ints, memoised, then set(list) of it 20,000 times: a 0.5 MB
  // pickle asking for 3.2 GB of copies.
  P p;
  p.Proto().Op(']').Op('q').U8(0).Op('(');
  for (int i = 0; i < 20000; ++i) p.Int1(static_cast<uint8_t>(i));
  p.Op('e');
  for (int i = 0; i < 20000; ++i) {
    p.Global("__builtin__", "set").Op('h').U8(0).Op(0x85).Op('R').Op('0');
  }
  p.Op('N').Stop();
  auto r = Parse(p.str());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(UnpicklerTest, ManyDictKeysParseInLinearTime) {
  // 200,000 int keys in one SETITEMS (once quadratic: a minute of CPU).
  P p;
  p.Proto().Op('}').Op('(');
  for (int i = 0; i < 200000; ++i) p.Int(i).Int(i);
  p.Int(7).Int(-1);  // a repeated key replaces the value, in place
  p.Op('u').Stop();
  auto r = Parse(p.str());
  ASSERT_TRUE(r.ok()) << r.status();
  const Value* root = (*r)->root();
  ASSERT_EQ(root->entries.size(), 200000u);
  EXPECT_EQ(root->entries[7].first->i, 7);
  EXPECT_EQ(root->entries[7].second->i, -1);
}

}  // namespace
}  // namespace modelserver::pickle
