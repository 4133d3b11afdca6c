// BERT, RoBERTa and DistilBERT against independent references: each test
// writes a model directory in the published Hugging Face layout (config.json
// key names, safetensors tensor names and shapes), loads it with LoadModel
// and compares the forward pass with plain torch ops that follow the Hugging
// Face modelling code, reading the weights by their published names.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/safetensors.h"
#include "worker/models/model.h"

namespace lathe {
namespace {

using nlohmann::json;
using Weights = std::map<std::string, torch::Tensor>;

constexpr int64_t kVocab = 60;
constexpr int64_t kHidden = 16;
constexpr int64_t kHeads = 4;
constexpr int64_t kInter = 32;
constexpr int64_t kLayers = 2;
constexpr int64_t kPositions = 24;
constexpr int64_t kLabels = 3;
constexpr int64_t kBatch = 3;
constexpr int64_t kSeq = 7;

std::string FreshDir(const std::string& name) {
  const std::string dir =
      (std::filesystem::path(::testing::TempDir()) / "lathe_encoders" / name)
          .string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// ---------------------------------------------------------------------------
// Published layouts: configs and tensors.

json BertConfigJson(bool roberta) {
  json j = {{"model_type", roberta ? "roberta" : "bert"},
            {"vocab_size", kVocab},
            {"hidden_size", kHidden},
            {"num_hidden_layers", kLayers},
            {"num_attention_heads", kHeads},
            {"intermediate_size", kInter},
            {"hidden_act", "gelu"},
            {"hidden_dropout_prob", 0.1},
            {"attention_probs_dropout_prob", 0.1},
            {"max_position_embeddings", kPositions},
            {"type_vocab_size", roberta ? 1 : 2},
            {"initializer_range", 0.02},
            {"layer_norm_eps", roberta ? 1e-5 : 1e-12},
            {"pad_token_id", roberta ? 1 : 0},
            {"position_embedding_type", "absolute"},
            {"classifier_dropout", nullptr},
            {"id2label", {{"0", "neg"}, {"1", "neu"}, {"2", "pos"}}},
            {"label2id", {{"neg", 0}, {"neu", 1}, {"pos", 2}}}};
  if (roberta) {
    j["bos_token_id"] = 0;
    j["eos_token_id"] = 2;
  }
  return j;
}

json DistilConfigJson(const std::string& activation, bool sinusoidal) {
  return {{"model_type", "distilbert"},
          {"vocab_size", kVocab},
          {"dim", kHidden},
          {"n_layers", kLayers},
          {"n_heads", kHeads},
          {"hidden_dim", kInter},
          {"activation", activation},
          {"dropout", 0.1},
          {"attention_dropout", 0.1},
          {"seq_classif_dropout", 0.2},
          {"qa_dropout", 0.1},
          {"sinusoidal_pos_embds", sinusoidal},
          {"max_position_embeddings", kPositions},
          {"initializer_range", 0.02},
          {"pad_token_id", 0},
          {"id2label", {{"0", "neg"}, {"1", "neu"}, {"2", "pos"}}},
          {"label2id", {{"neg", 0}, {"neu", 1}, {"pos", 2}}}};
}

torch::Tensor Rand(std::vector<int64_t> shape, double scale = 0.3) {
  return torch::randn(shape) * scale;
}

void AddLinear(Weights& w, const std::string& name, int64_t in, int64_t out) {
  w[name + ".weight"] = Rand({out, in});
  w[name + ".bias"] = Rand({out}, 0.1);
}

void AddNorm(Weights& w, const std::string& name) {
  w[name + ".weight"] = 1.0 + Rand({kHidden}, 0.1);
  w[name + ".bias"] = Rand({kHidden}, 0.1);
}

// The tensors a Hugging Face BERT/RoBERTa class saves, with prefix `p`
// ("bert." / "roberta." / "" for the base classes).
Weights BertLikeWeights(bool roberta, const std::string& p, HeadKind head) {
  Weights w;
  w[p + "embeddings.word_embeddings.weight"] = Rand({kVocab, kHidden});
  w[p + "embeddings.position_embeddings.weight"] = Rand({kPositions, kHidden});
  w[p + "embeddings.token_type_embeddings.weight"] =
      Rand({roberta ? 1 : 2, kHidden});
  AddNorm(w, p + "embeddings.LayerNorm");
  for (int i = 0; i < kLayers; ++i) {
    const std::string l = p + "encoder.layer." + std::to_string(i) + ".";
    AddLinear(w, l + "attention.self.query", kHidden, kHidden);
    AddLinear(w, l + "attention.self.key", kHidden, kHidden);
    AddLinear(w, l + "attention.self.value", kHidden, kHidden);
    AddLinear(w, l + "attention.output.dense", kHidden, kHidden);
    AddNorm(w, l + "attention.output.LayerNorm");
    AddLinear(w, l + "intermediate.dense", kHidden, kInter);
    AddLinear(w, l + "output.dense", kInter, kHidden);
    AddNorm(w, l + "output.LayerNorm");
  }
  const bool pooler = head == HeadKind::kNone ||
                      (!roberta && head == HeadKind::kSequenceClassification);
  if (pooler) AddLinear(w, p + "pooler.dense", kHidden, kHidden);
  switch (head) {
    case HeadKind::kSequenceClassification:
      if (roberta) {
        AddLinear(w, "classifier.dense", kHidden, kHidden);
        AddLinear(w, "classifier.out_proj", kHidden, kLabels);
      } else {
        AddLinear(w, "classifier", kHidden, kLabels);
      }
      break;
    case HeadKind::kTokenClassification:
      AddLinear(w, "classifier", kHidden, kLabels);
      break;
    case HeadKind::kQuestionAnswering:
      AddLinear(w, "qa_outputs", kHidden, 2);
      break;
    case HeadKind::kMaskedLm:
      if (roberta) {
        AddLinear(w, "lm_head.dense", kHidden, kHidden);
        AddNorm(w, "lm_head.layer_norm");
        w["lm_head.bias"] = Rand({kVocab}, 0.1);
      } else {
        AddLinear(w, "cls.predictions.transform.dense", kHidden, kHidden);
        AddNorm(w, "cls.predictions.transform.LayerNorm");
        w["cls.predictions.bias"] = Rand({kVocab}, 0.1);
      }
      break;
    default:
      break;
  }
  return w;
}

Weights DistilWeights(const std::string& p, HeadKind head) {
  Weights w;
  w[p + "embeddings.word_embeddings.weight"] = Rand({kVocab, kHidden});
  w[p + "embeddings.position_embeddings.weight"] = Rand({kPositions, kHidden});
  AddNorm(w, p + "embeddings.LayerNorm");
  for (int i = 0; i < kLayers; ++i) {
    const std::string l = p + "transformer.layer." + std::to_string(i) + ".";
    AddLinear(w, l + "attention.q_lin", kHidden, kHidden);
    AddLinear(w, l + "attention.k_lin", kHidden, kHidden);
    AddLinear(w, l + "attention.v_lin", kHidden, kHidden);
    AddLinear(w, l + "attention.out_lin", kHidden, kHidden);
    AddNorm(w, l + "sa_layer_norm");
    AddLinear(w, l + "ffn.lin1", kHidden, kInter);
    AddLinear(w, l + "ffn.lin2", kInter, kHidden);
    AddNorm(w, l + "output_layer_norm");
  }
  switch (head) {
    case HeadKind::kSequenceClassification:
      AddLinear(w, "pre_classifier", kHidden, kHidden);
      AddLinear(w, "classifier", kHidden, kLabels);
      break;
    case HeadKind::kTokenClassification:
      AddLinear(w, "classifier", kHidden, kLabels);
      break;
    case HeadKind::kQuestionAnswering:
      AddLinear(w, "qa_outputs", kHidden, 2);
      break;
    case HeadKind::kMaskedLm:
      AddLinear(w, "vocab_transform", kHidden, kHidden);
      AddNorm(w, "vocab_layer_norm");
      w["vocab_projector.bias"] = Rand({kVocab}, 0.1);
      break;
    default:
      break;
  }
  return w;
}

std::string DtypeName(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat16:
      return "F16";
    case torch::kBFloat16:
      return "BF16";
    case torch::kFloat64:
      return "F64";
    default:
      return "F32";
  }
}

// Writes `w` in `dtype` to `path`; returns the values as the file holds
// them, back in float32 (what a correct loader must produce).
Weights WriteWeights(const std::string& path, const Weights& w,
                     torch::ScalarType dtype = torch::kFloat32) {
  std::vector<torch::Tensor> keep;
  std::vector<TensorView> views;
  Weights stored;
  for (const auto& [name, t] : w) {
    torch::Tensor c = t.to(dtype).contiguous();
    keep.push_back(c);
    stored[name] = c.to(torch::kFloat32);
    views.push_back({name, DtypeName(dtype), c.sizes().vec(), c.data_ptr(),
                     static_cast<size_t>(c.numel() * c.element_size())});
  }
  EXPECT_TRUE(WriteSafetensors(path, views, {{"format", "pt"}}).ok());
  return stored;
}

void WriteConfig(const std::string& dir, const json& config) {
  ASSERT_TRUE(WriteFileAtomic(dir + "/config.json", config.dump(2)).ok());
}

// Splits `w` over two shards with model.safetensors.index.json.
Weights WriteSharded(const std::string& dir, const Weights& w) {
  Weights first, second;
  json map = json::object();
  int i = 0;
  for (const auto& [name, t] : w) {
    const bool a = (i++ % 2) == 0;
    (a ? first : second)[name] = t;
    map[name] = a ? "model-00001-of-00002.safetensors"
                  : "model-00002-of-00002.safetensors";
  }
  Weights stored =
      WriteWeights(dir + "/model-00001-of-00002.safetensors", first);
  for (auto& [k, v] :
       WriteWeights(dir + "/model-00002-of-00002.safetensors", second)) {
    stored[k] = v;
  }
  EXPECT_TRUE(
      WriteFileAtomic(
          dir + "/model.safetensors.index.json",
          json({{"metadata", {{"total_size", 0}}}, {"weight_map", map}}).dump())
          .ok());
  return stored;
}

// ---------------------------------------------------------------------------
// References, after the Hugging Face modelling code, reading weights by name.

torch::Tensor Lin(const Weights& w, const std::string& n,
                  const torch::Tensor& x) {
  return torch::matmul(x, w.at(n + ".weight").t()) + w.at(n + ".bias");
}

torch::Tensor Norm(const Weights& w, const std::string& n,
                   const torch::Tensor& x, double eps) {
  torch::Tensor mean = x.mean(-1, true);
  torch::Tensor var = (x - mean).pow(2).mean(-1, true);
  return (x - mean) / torch::sqrt(var + eps) * w.at(n + ".weight") +
         w.at(n + ".bias");
}

torch::Tensor GeluErf(const torch::Tensor& x) {
  return 0.5 * x * (1.0 + torch::erf(x / std::sqrt(2.0)));
}

torch::Tensor Act(const std::string& name, const torch::Tensor& x) {
  if (name == "relu") return torch::clamp_min(x, 0);
  return GeluErf(x);
}

torch::Tensor Embed(const Weights& w, const std::string& n,
                    const torch::Tensor& ids) {
  return w.at(n)
      .index_select(0, ids.reshape(-1))
      .view({ids.size(0), ids.size(1), -1});
}

torch::Tensor Heads(const torch::Tensor& x) {
  return x.view({x.size(0), x.size(1), kHeads, kHidden / kHeads})
      .permute({0, 2, 1, 3});
}

torch::Tensor Merge(const torch::Tensor& x) {
  return x.permute({0, 2, 1, 3}).reshape({x.size(0), x.size(2), kHidden});
}

torch::Tensor BertLikeReference(const Weights& w, const std::string& p,
                                bool roberta, HeadKind head,
                                const ModelInputs& in) {
  const double eps = roberta ? 1e-5 : 1e-12;
  torch::Tensor positions;
  if (roberta) {
    torch::Tensor m = in.input_ids.ne(1).to(torch::kInt);
    positions = (torch::cumsum(m, 1).to(torch::kInt) * m).to(torch::kLong) + 1;
  } else {
    positions = torch::arange(kSeq).unsqueeze(0).expand({kBatch, kSeq});
  }
  torch::Tensor x =
      Embed(w, p + "embeddings.word_embeddings.weight", in.input_ids) +
      Embed(w, p + "embeddings.token_type_embeddings.weight",
            in.token_type_ids);
  x = x + Embed(w, p + "embeddings.position_embeddings.weight", positions);
  x = Norm(w, p + "embeddings.LayerNorm", x, eps);
  torch::Tensor ext =
      (1.0 - in.attention_mask.to(torch::kFloat)).view({kBatch, 1, 1, kSeq}) *
      std::numeric_limits<float>::lowest();
  for (int i = 0; i < kLayers; ++i) {
    const std::string l = p + "encoder.layer." + std::to_string(i) + ".";
    torch::Tensor q = Heads(Lin(w, l + "attention.self.query", x));
    torch::Tensor k = Heads(Lin(w, l + "attention.self.key", x));
    torch::Tensor v = Heads(Lin(w, l + "attention.self.value", x));
    torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2)) /
                           std::sqrt(static_cast<double>(kHidden / kHeads));
    torch::Tensor probs = torch::softmax(scores + ext, -1);
    torch::Tensor a = Norm(
        w, l + "attention.output.LayerNorm",
        Lin(w, l + "attention.output.dense", Merge(torch::matmul(probs, v))) +
            x,
        eps);
    torch::Tensor inter = GeluErf(Lin(w, l + "intermediate.dense", a));
    x = Norm(w, l + "output.LayerNorm", Lin(w, l + "output.dense", inter) + a,
             eps);
  }
  const torch::Tensor cls = x.select(1, 0);
  switch (head) {
    case HeadKind::kSequenceClassification:
      if (roberta) {
        return Lin(w, "classifier.out_proj",
                   torch::tanh(Lin(w, "classifier.dense", cls)));
      }
      return Lin(w, "classifier", torch::tanh(Lin(w, p + "pooler.dense", cls)));
    case HeadKind::kTokenClassification:
      return Lin(w, "classifier", x);
    case HeadKind::kQuestionAnswering:
      return Lin(w, "qa_outputs", x);
    case HeadKind::kMaskedLm: {
      const std::string h = roberta ? "lm_head." : "cls.predictions.";
      torch::Tensor y =
          GeluErf(Lin(w, h + (roberta ? "dense" : "transform.dense"), x));
      y = Norm(w, h + (roberta ? "layer_norm" : "transform.LayerNorm"), y, eps);
      return torch::matmul(y,
                           w.at(p + "embeddings.word_embeddings.weight").t()) +
             w.at(h + "bias");
    }
    default:
      return x;
  }
}

torch::Tensor DistilReference(const Weights& w, const std::string& p,
                              const std::string& act, HeadKind head,
                              const ModelInputs& in) {
  const double eps = 1e-12;
  torch::Tensor positions =
      torch::arange(kSeq).unsqueeze(0).expand({kBatch, kSeq});
  torch::Tensor x =
      Embed(w, p + "embeddings.word_embeddings.weight", in.input_ids) +
      Embed(w, p + "embeddings.position_embeddings.weight", positions);
  x = Norm(w, p + "embeddings.LayerNorm", x, eps);
  torch::Tensor pad = in.attention_mask.eq(0).view({kBatch, 1, 1, kSeq});
  for (int i = 0; i < kLayers; ++i) {
    const std::string l = p + "transformer.layer." + std::to_string(i) + ".";
    torch::Tensor q = Heads(Lin(w, l + "attention.q_lin", x)) /
                      std::sqrt(static_cast<double>(kHidden / kHeads));
    torch::Tensor k = Heads(Lin(w, l + "attention.k_lin", x));
    torch::Tensor v = Heads(Lin(w, l + "attention.v_lin", x));
    torch::Tensor scores = torch::matmul(q, k.transpose(2, 3));
    scores = scores.masked_fill(pad.expand_as(scores),
                                std::numeric_limits<float>::lowest());
    torch::Tensor ctx = Merge(torch::matmul(torch::softmax(scores, -1), v));
    torch::Tensor sa = Norm(w, l + "sa_layer_norm",
                            Lin(w, l + "attention.out_lin", ctx) + x, eps);
    torch::Tensor ffn =
        Lin(w, l + "ffn.lin2", Act(act, Lin(w, l + "ffn.lin1", sa)));
    x = Norm(w, l + "output_layer_norm", ffn + sa, eps);
  }
  switch (head) {
    case HeadKind::kSequenceClassification:
      return Lin(w, "classifier",
                 torch::clamp_min(Lin(w, "pre_classifier", x.select(1, 0)), 0));
    case HeadKind::kTokenClassification:
      return Lin(w, "classifier", x);
    case HeadKind::kQuestionAnswering:
      return Lin(w, "qa_outputs", x);
    case HeadKind::kMaskedLm: {
      torch::Tensor y = Act(act, Lin(w, "vocab_transform", x));
      y = Norm(w, "vocab_layer_norm", y, eps);
      return torch::matmul(y,
                           w.at(p + "embeddings.word_embeddings.weight").t()) +
             w.at("vocab_projector.bias");
    }
    default:
      return x;
  }
}

// Padding on the right of row 1 and on the left of row 2; `pad` fills the
// padded ids (RoBERTa's positions depend on them).
ModelInputs MakeInputs(int64_t pad) {
  ModelInputs in;
  in.input_ids = torch::randint(3, kVocab, {kBatch, kSeq}, torch::kLong);
  in.attention_mask = torch::ones({kBatch, kSeq}, torch::kLong);
  in.attention_mask.index_put_({1, torch::indexing::Slice(4, kSeq)}, 0);
  in.attention_mask.index_put_({2, torch::indexing::Slice(0, 2)}, 0);
  in.input_ids.masked_fill_(in.attention_mask.eq(0), pad);
  in.token_type_ids = torch::zeros({kBatch, kSeq}, torch::kLong);
  return in;
}

double MaxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return 1e9;
  return (a - b).abs().max().item<double>();
}

// Only rows' real tokens: what padding positions output is not compared for
// token-level heads (Hugging Face's values there are not meaningful either).
torch::Tensor RealTokens(const torch::Tensor& y, const ModelInputs& in,
                         HeadKind head) {
  if (head == HeadKind::kSequenceClassification) return y;
  return y.index({in.attention_mask.to(torch::kBool)});
}

// The same weights with one LayerNorm scaled by 1%: a reference built from
// them must disagree with the model, or the comparison proves nothing.
Weights Perturbed(const Weights& w, const std::string& p) {
  Weights out = w;
  const std::string n = p + "embeddings.LayerNorm.weight";
  out[n] = w.at(n) * 1.01;
  return out;
}

struct Captured {
  std::vector<std::string> lines;
  LogFn fn() {
    return [this](const std::string& s) { lines.push_back(s); };
  }
  std::string all() const { return absl::StrJoin(lines, "\n"); }
};

TaskModel MustLoad(const std::string& dir, HeadKind head,
                   Captured* log = nullptr,
                   const std::vector<std::string>& labels = {}) {
  Captured local;
  auto model = LoadModel(dir, head, labels, (log ? log : &local)->fn());
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return nullptr;
  (*model)->eval();
  return *model;
}

torch::Tensor Forward(TaskModel& model, const ModelInputs& in) {
  torch::NoGradGuard no_grad;
  return model->forward(in);
}

const HeadKind kAllHeads[] = {
    HeadKind::kNone, HeadKind::kSequenceClassification,
    HeadKind::kTokenClassification, HeadKind::kQuestionAnswering,
    HeadKind::kMaskedLm};

std::string Prefix(const std::string& family, HeadKind head) {
  return head == HeadKind::kNone ? "" : family + ".";
}

// ---------------------------------------------------------------------------

TEST(EncodersTest, BertMatchesReferenceForEveryHead) {
  for (HeadKind head : kAllHeads) {
    SCOPED_TRACE(static_cast<int>(head));
    torch::manual_seed(1);
    const std::string dir = FreshDir("bert_heads");
    WriteConfig(dir, BertConfigJson(false));
    const std::string p = Prefix("bert", head);
    const Weights w = WriteWeights(dir + "/model.safetensors",
                                   BertLikeWeights(false, p, head));
    TaskModel model = MustLoad(dir, head);
    ASSERT_NE(model, nullptr);
    ModelInputs in = MakeInputs(0);
    in.token_type_ids = torch::randint(0, 2, {kBatch, kSeq}, torch::kLong);
    const torch::Tensor want = BertLikeReference(w, p, false, head, in);
    const torch::Tensor got = Forward(model, in);
    EXPECT_LT(MaxDiff(RealTokens(got, in, head), RealTokens(want, in, head)),
              1e-5);
    const torch::Tensor off =
        BertLikeReference(Perturbed(w, p), p, false, head, in);
    EXPECT_GT(MaxDiff(RealTokens(got, in, head), RealTokens(off, in, head)),
              1e-4);
  }
}

TEST(EncodersTest, RobertaMatchesReferenceForEveryHead) {
  for (HeadKind head : kAllHeads) {
    SCOPED_TRACE(static_cast<int>(head));
    torch::manual_seed(2);
    const std::string dir = FreshDir("roberta_heads");
    WriteConfig(dir, BertConfigJson(true));
    const std::string p = Prefix("roberta", head);
    const Weights w = WriteWeights(dir + "/model.safetensors",
                                   BertLikeWeights(true, p, head));
    TaskModel model = MustLoad(dir, head);
    ASSERT_NE(model, nullptr);
    const ModelInputs in = MakeInputs(1);
    const torch::Tensor want = BertLikeReference(w, p, true, head, in);
    const torch::Tensor got = Forward(model, in);
    EXPECT_LT(MaxDiff(RealTokens(got, in, head), RealTokens(want, in, head)),
              1e-5);
    const torch::Tensor off =
        BertLikeReference(Perturbed(w, p), p, true, head, in);
    EXPECT_GT(MaxDiff(RealTokens(got, in, head), RealTokens(off, in, head)),
              1e-4);
  }
}

TEST(EncodersTest, DistilBertMatchesReferenceForEveryHead) {
  for (const std::string act : {"gelu", "relu"}) {
    for (HeadKind head : kAllHeads) {
      SCOPED_TRACE(act + " " + std::to_string(static_cast<int>(head)));
      torch::manual_seed(3);
      const std::string dir = FreshDir("distilbert_heads");
      WriteConfig(dir, DistilConfigJson(act, false));
      const std::string p = Prefix("distilbert", head);
      const Weights w =
          WriteWeights(dir + "/model.safetensors", DistilWeights(p, head));
      TaskModel model = MustLoad(dir, head);
      ASSERT_NE(model, nullptr);
      const ModelInputs in = MakeInputs(0);
      const torch::Tensor want = DistilReference(w, p, act, head, in);
      const torch::Tensor got = Forward(model, in);
      EXPECT_LT(MaxDiff(RealTokens(got, in, head), RealTokens(want, in, head)),
                1e-5);
      const torch::Tensor off =
          DistilReference(Perturbed(w, p), p, act, head, in);
      EXPECT_GT(MaxDiff(RealTokens(got, in, head), RealTokens(off, in, head)),
                1e-4);
    }
  }
}

// Sinusoidal DistilBERT checkpoints store the table; a fresh model builds the
// same table itself.
TEST(EncodersTest, DistilBertSinusoidalTable) {
  auto config = ModelConfig::FromJson(DistilConfigJson("gelu", true));
  ASSERT_TRUE(config.ok()) << config.status();
  auto model = CreateModel(*config, HeadKind::kNone);
  ASSERT_TRUE(model.ok()) << model.status();
  torch::Tensor table;
  for (const auto& item : (*model)->named_parameters()) {
    if (item.key() == "embeddings.position_embeddings.weight") {
      table = item.value();
    }
  }
  ASSERT_TRUE(table.defined());
  const int pos = 5, j = 6;
  EXPECT_NEAR(table[pos][j].item<double>(),
              std::sin(pos / std::pow(10000.0, 2.0 * (j / 2) / kHidden)), 1e-6);
  EXPECT_NEAR(table[pos][j + 1].item<double>(),
              std::cos(pos / std::pow(10000.0, 2.0 * (j / 2) / kHidden)), 1e-6);
  EXPECT_FALSE(table.requires_grad());
}

TEST(EncodersTest, BertVariantsLoad) {
  const HeadKind head = HeadKind::kSequenceClassification;
  torch::manual_seed(4);
  const Weights base = BertLikeWeights(false, "bert.", head);
  const ModelInputs in = MakeInputs(0);

  {  // Legacy LayerNorm names: gamma/beta.
    const std::string dir = FreshDir("bert_legacy");
    WriteConfig(dir, BertConfigJson(false));
    Weights legacy;
    for (const auto& [name, t] : base) {
      std::string n = name;
      if (absl::EndsWith(n, "LayerNorm.weight")) {
        n = n.substr(0, n.size() - 6) + "gamma";
      } else if (absl::EndsWith(n, "LayerNorm.bias")) {
        n = n.substr(0, n.size() - 4) + "beta";
      }
      legacy[n] = t;
    }
    ASSERT_TRUE(legacy.count("bert.embeddings.LayerNorm.gamma"));
    WriteWeights(dir + "/model.safetensors", legacy);
    TaskModel model = MustLoad(dir, head);
    ASSERT_NE(model, nullptr);
    EXPECT_LT(MaxDiff(Forward(model, in),
                      BertLikeReference(base, "bert.", false, head, in)),
              1e-5);
  }
  {  // Backbone saved without the "bert." prefix.
    const std::string dir = FreshDir("bert_no_prefix");
    WriteConfig(dir, BertConfigJson(false));
    Weights bare;
    for (const auto& [name, t] : base) {
      bare[absl::StartsWith(name, "bert.") ? name.substr(5) : name] = t;
    }
    WriteWeights(dir + "/model.safetensors", bare);
    TaskModel model = MustLoad(dir, head);
    ASSERT_NE(model, nullptr);
    EXPECT_LT(MaxDiff(Forward(model, in),
                      BertLikeReference(base, "bert.", false, head, in)),
              1e-5);
  }
  for (torch::ScalarType dtype :
       {torch::kFloat16, torch::kBFloat16, torch::kFloat64}) {
    SCOPED_TRACE(DtypeName(dtype));
    const std::string dir = FreshDir("bert_dtype");
    WriteConfig(dir, BertConfigJson(false));
    const Weights stored =
        WriteWeights(dir + "/model.safetensors", base, dtype);
    TaskModel model = MustLoad(dir, head);
    ASSERT_NE(model, nullptr);
    for (const auto& item : model->named_parameters()) {
      EXPECT_EQ(item.value().scalar_type(), torch::kFloat32);
    }
    EXPECT_LT(MaxDiff(Forward(model, in),
                      BertLikeReference(stored, "bert.", false, head, in)),
              1e-5);
  }
  {  // Sharded with an index.
    const std::string dir = FreshDir("bert_sharded");
    WriteConfig(dir, BertConfigJson(false));
    const Weights stored = WriteSharded(dir, base);
    TaskModel model = MustLoad(dir, head);
    ASSERT_NE(model, nullptr);
    EXPECT_LT(MaxDiff(Forward(model, in),
                      BertLikeReference(stored, "bert.", false, head, in)),
              1e-5);
  }
}

// A BertForPreTraining checkpoint (MLM + next-sentence heads, old buffers)
// loads for classification: the pre-training heads are skipped by name, the
// classifier starts fresh, both logged.
TEST(EncodersTest, PretrainingCheckpointForClassification) {
  torch::manual_seed(5);
  const std::string dir = FreshDir("bert_pretraining");
  json config = BertConfigJson(false);
  config.erase("id2label");
  config.erase("label2id");
  config["architectures"] = {"BertForPreTraining"};
  WriteConfig(dir, config);
  Weights w = BertLikeWeights(false, "bert.", HeadKind::kMaskedLm);
  AddLinear(w, "bert.pooler.dense", kHidden, kHidden);
  AddLinear(w, "cls.seq_relationship", kHidden, 2);
  w["cls.predictions.decoder.weight"] =
      w["bert.embeddings.word_embeddings.weight"];
  w["bert.embeddings.position_ids"] = torch::arange(kPositions).unsqueeze(0);
  std::vector<torch::Tensor> keep;
  std::vector<TensorView> views;
  for (const auto& [name, t] : w) {
    torch::Tensor c = t.contiguous();
    keep.push_back(c);
    views.push_back({name, c.scalar_type() == torch::kLong ? "I64" : "F32",
                     c.sizes().vec(), c.data_ptr(),
                     static_cast<size_t>(c.numel() * c.element_size())});
  }
  ASSERT_TRUE(
      WriteSafetensors(dir + "/model.safetensors", views, {{"format", "pt"}})
          .ok());
  Captured log;
  TaskModel model = MustLoad(dir, HeadKind::kSequenceClassification, &log,
                             {"a", "b", "c", "d"});
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->config().id2label,
            (std::vector<std::string>{"a", "b", "c", "d"}));
  const std::string text = log.all();
  EXPECT_NE(text.find("cls.seq_relationship.weight"), std::string::npos)
      << text;
  EXPECT_NE(text.find("cls.predictions.transform.dense.weight"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("initialised fresh"), std::string::npos) << text;
  EXPECT_NE(text.find("classifier.weight"), std::string::npos) << text;
  const ModelInputs in = MakeInputs(0);
  EXPECT_EQ(Forward(model, in).sizes(), (std::vector<int64_t>{kBatch, 4}));

  // The same checkpoint as a masked LM loads every head tensor.
  Captured mlm_log;
  TaskModel mlm = MustLoad(dir, HeadKind::kMaskedLm, &mlm_log);
  ASSERT_NE(mlm, nullptr);
  EXPECT_EQ(mlm_log.all().find("initialised fresh"), std::string::npos)
      << mlm_log.all();
  EXPECT_LT(MaxDiff(RealTokens(Forward(mlm, in), in, HeadKind::kMaskedLm),
                    RealTokens(BertLikeReference(w, "bert.", false,
                                                 HeadKind::kMaskedLm, in),
                               in, HeadKind::kMaskedLm)),
            1e-5);
}

TEST(EncodersTest, HeadMissingIsInitialisedAndLogged) {
  torch::manual_seed(6);
  const std::string dir = FreshDir("distil_base");
  WriteConfig(dir, DistilConfigJson("gelu", false));
  WriteWeights(dir + "/model.safetensors", DistilWeights("", HeadKind::kNone));
  Captured log;
  TaskModel model =
      MustLoad(dir, HeadKind::kSequenceClassification, &log, {"x", "y"});
  ASSERT_NE(model, nullptr);
  EXPECT_NE(log.all().find("pre_classifier.weight"), std::string::npos)
      << log.all();
  EXPECT_NE(log.all().find("initialised fresh"), std::string::npos);
  const ModelInputs in = MakeInputs(0);
  EXPECT_EQ(Forward(model, in).sizes(), (std::vector<int64_t>{kBatch, 2}));
}

// A classifier of the right size is kept when the job names other labels;
// the index mapping is reported.
TEST(EncodersTest, ReusedClassifierWithNewLabelsIsLogged) {
  torch::manual_seed(11);
  const std::string dir = FreshDir("bert_relabel");
  WriteConfig(dir, BertConfigJson(false));
  const Weights w = WriteWeights(
      dir + "/model.safetensors",
      BertLikeWeights(false, "bert.", HeadKind::kSequenceClassification));
  Captured log;
  TaskModel model = MustLoad(dir, HeadKind::kSequenceClassification, &log,
                             {"bad", "meh", "good"});
  ASSERT_NE(model, nullptr);
  EXPECT_NE(log.all().find("map by index"), std::string::npos) << log.all();
  EXPECT_EQ(log.all().find("initialised fresh"), std::string::npos);
  const ModelInputs in = MakeInputs(0);
  EXPECT_LT(MaxDiff(Forward(model, in),
                    BertLikeReference(w, "bert.", false,
                                      HeadKind::kSequenceClassification, in)),
            1e-5);
}

// Returns the header JSON of a safetensors file, checking its alignment.
json ReadHeader(const std::string& path) {
  auto raw = ReadFile(path);
  EXPECT_TRUE(raw.ok());
  if (!raw.ok() || raw->size() < 8) return json();
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) {
    n |= static_cast<uint64_t>(static_cast<uint8_t>((*raw)[i])) << (8 * i);
  }
  EXPECT_EQ(n % 8, 0u);
  return json::parse(raw->substr(8, n));
}

void ExpectRoundTrip(const std::string& dir, HeadKind head,
                     const std::string& cls, const std::string& model_type,
                     const std::vector<std::string>& must_have,
                     const std::vector<std::string>& must_not_have,
                     int64_t pad) {
  TaskModel first = MustLoad(dir, head);
  ASSERT_NE(first, nullptr);
  const std::string out = dir + "_saved";
  std::filesystem::remove_all(out);
  std::filesystem::create_directories(out);
  ASSERT_TRUE(SaveModel(*first, out).ok());
  TaskModel second = MustLoad(out, head);
  ASSERT_NE(second, nullptr);
  const auto a = first->named_parameters();
  const auto b = second->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) {
    const torch::Tensor* other = b.find(item.key());
    ASSERT_NE(other, nullptr) << item.key();
    EXPECT_TRUE(torch::equal(item.value(), *other)) << item.key();
  }
  const ModelInputs in = MakeInputs(pad);
  EXPECT_TRUE(torch::equal(Forward(first, in), Forward(second, in)));

  const json header = ReadHeader(out + "/model.safetensors");
  EXPECT_EQ(header["__metadata__"], json({{"format", "pt"}}));
  EXPECT_EQ(header.size(), a.size() + 1);
  for (const std::string& n : must_have) {
    EXPECT_TRUE(header.contains(n)) << n;
  }
  for (const std::string& n : must_not_have) {
    EXPECT_FALSE(header.contains(n)) << n;
  }
  auto config_text = ReadFile(out + "/config.json");
  ASSERT_TRUE(config_text.ok());
  const json config = json::parse(*config_text);
  EXPECT_EQ(config["architectures"], json({cls}));
  EXPECT_EQ(config["model_type"], model_type);
  EXPECT_EQ(config["id2label"],
            json({{"0", "neg"}, {"1", "neu"}, {"2", "pos"}}));
  EXPECT_EQ(config["label2id"], json({{"neg", 0}, {"neu", 1}, {"pos", 2}}));
}

TEST(EncodersTest, SaveLoadRoundTrip) {
  torch::manual_seed(7);
  {
    const std::string dir = FreshDir("rt_bert_cls");
    WriteConfig(dir, BertConfigJson(false));
    WriteWeights(
        dir + "/model.safetensors",
        BertLikeWeights(false, "bert.", HeadKind::kSequenceClassification),
        torch::kBFloat16);
    ExpectRoundTrip(dir, HeadKind::kSequenceClassification,
                    "BertForSequenceClassification", "bert",
                    {"bert.encoder.layer.0.attention.self.query.weight",
                     "bert.pooler.dense.weight", "classifier.bias"},
                    {}, 0);
  }
  {
    const std::string dir = FreshDir("rt_bert_mlm");
    WriteConfig(dir, BertConfigJson(false));
    WriteWeights(dir + "/model.safetensors",
                 BertLikeWeights(false, "bert.", HeadKind::kMaskedLm));
    ExpectRoundTrip(
        dir, HeadKind::kMaskedLm, "BertForMaskedLM", "bert",
        {"cls.predictions.bias", "cls.predictions.transform.LayerNorm.weight",
         "bert.embeddings.word_embeddings.weight"},
        {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
         "bert.pooler.dense.weight"},
        0);
  }
  {
    const std::string dir = FreshDir("rt_roberta_cls");
    WriteConfig(dir, BertConfigJson(true));
    WriteWeights(
        dir + "/model.safetensors",
        BertLikeWeights(true, "roberta.", HeadKind::kSequenceClassification));
    ExpectRoundTrip(dir, HeadKind::kSequenceClassification,
                    "RobertaForSequenceClassification", "roberta",
                    {"classifier.dense.weight", "classifier.out_proj.bias",
                     "roberta.encoder.layer.1.output.LayerNorm.bias"},
                    {"roberta.pooler.dense.weight"}, 1);
  }
  {
    const std::string dir = FreshDir("rt_distil_mlm");
    WriteConfig(dir, DistilConfigJson("gelu", false));
    WriteWeights(dir + "/model.safetensors",
                 DistilWeights("distilbert.", HeadKind::kMaskedLm));
    ExpectRoundTrip(dir, HeadKind::kMaskedLm, "DistilBertForMaskedLM",
                    "distilbert",
                    {"vocab_projector.bias", "vocab_layer_norm.weight",
                     "distilbert.transformer.layer.0.attention.q_lin.weight"},
                    {"vocab_projector.weight"}, 0);
  }
}

void ExpectLoadError(const std::string& dir, HeadKind head,
                     absl::StatusCode code,
                     const std::vector<std::string>& fragments) {
  const auto model = LoadModel(dir, head, {}, nullptr);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), code) << model.status();
  for (const std::string& f : fragments) {
    EXPECT_NE(model.status().message().find(f), std::string::npos)
        << "missing \"" << f << "\" in " << model.status();
  }
}

TEST(EncodersTest, LoadErrorsNameTheProblem) {
  torch::manual_seed(8);
  const HeadKind head = HeadKind::kSequenceClassification;
  const Weights base = BertLikeWeights(false, "bert.", head);
  {
    const std::string dir = FreshDir("err_missing");
    WriteConfig(dir, BertConfigJson(false));
    Weights w = base;
    w.erase("bert.encoder.layer.1.output.dense.weight");
    WriteWeights(dir + "/model.safetensors", w);
    ExpectLoadError(dir, head, absl::StatusCode::kInvalidArgument,
                    {"missing", "bert.encoder.layer.1.output.dense.weight"});
  }
  {
    const std::string dir = FreshDir("err_unexpected");
    WriteConfig(dir, BertConfigJson(false));
    Weights w = base;
    w["bert.encoder.layer.2.output.dense.weight"] = Rand({kHidden, kInter});
    WriteWeights(dir + "/model.safetensors", w);
    ExpectLoadError(dir, head, absl::StatusCode::kInvalidArgument,
                    {"unexpected", "bert.encoder.layer.2.output.dense.weight"});
  }
  {
    const std::string dir = FreshDir("err_shape");
    WriteConfig(dir, BertConfigJson(false));
    Weights w = base;
    w["bert.encoder.layer.0.attention.self.key.weight"] =
        Rand({kHidden, kHidden + 1});
    WriteWeights(dir + "/model.safetensors", w);
    ExpectLoadError(dir, head, absl::StatusCode::kInvalidArgument,
                    {"bert.encoder.layer.0.attention.self.key.weight",
                     "[16, 17]", "[16, 16]"});
  }
  {
    const std::string dir = FreshDir("err_pickle");
    WriteConfig(dir, BertConfigJson(false));
    ASSERT_TRUE(WriteFileAtomic(dir + "/pytorch_model.bin", "PK\x03\x04").ok());
    ExpectLoadError(dir, head, absl::StatusCode::kInvalidArgument,
                    {"pytorch_model.bin", "convert", "safetensors"});
  }
  {
    const std::string dir = FreshDir("err_no_config");
    WriteWeights(dir + "/model.safetensors", base);
    ExpectLoadError(dir, head, absl::StatusCode::kNotFound, {"config.json"});
  }
  {
    const std::string dir = FreshDir("err_bad_config");
    json config = BertConfigJson(false);
    config["num_attention_heads"] = 5;
    WriteConfig(dir, config);
    WriteWeights(dir + "/model.safetensors", base);
    ExpectLoadError(dir, head, absl::StatusCode::kInvalidArgument,
                    {"config.json", "num_attention_heads"});
  }
  {
    const std::string dir = FreshDir("err_int_into_float");
    WriteConfig(dir, BertConfigJson(false));
    Weights w = base;
    w.erase("classifier.bias");
    WriteWeights(dir + "/model.safetensors", w);
    std::vector<int64_t> ints(kLabels, 1);
    // Re-write with an integer tensor where the model holds floats.
    std::vector<torch::Tensor> keep;
    std::vector<TensorView> views;
    for (const auto& [name, t] : w) {
      keep.push_back(t.contiguous());
      views.push_back({name, "F32", t.sizes().vec(), keep.back().data_ptr(),
                       static_cast<size_t>(t.numel() * 4)});
    }
    views.push_back(
        {"classifier.bias", "I64", {kLabels}, ints.data(), ints.size() * 8});
    ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", views, {}).ok());
    ExpectLoadError(dir, head, absl::StatusCode::kInvalidArgument,
                    {"classifier.bias", "I64"});
  }
}

TEST(EncodersTest, CreateModelContracts) {
  const auto preset = FindPreset("preset:bert-tiny");
  ASSERT_TRUE(preset.ok());
  ModelConfig config = preset->config;
  EXPECT_EQ(CreateModel(config, HeadKind::kCausalLm).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      CreateModel(config, HeadKind::kSequenceClassification).status().code(),
      absl::StatusCode::kInvalidArgument);  // No labels.
  config.id2label = {"a", "b"};
  torch::manual_seed(9);
  auto a = CreateModel(config, HeadKind::kSequenceClassification);
  ASSERT_TRUE(a.ok()) << a.status();
  torch::manual_seed(9);
  auto b = CreateModel(config, HeadKind::kSequenceClassification);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*a)->architecture_class(), "BertForSequenceClassification");
  EXPECT_EQ((*a)->base_prefix(), "bert");
  const auto pa = (*a)->named_parameters();
  const auto pb = (*b)->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa) {
    EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
  }
  // Hugging Face initialisation: LayerNorm 1/0, zero biases, padding row 0.
  EXPECT_TRUE(
      torch::equal(pa["bert.embeddings.LayerNorm.weight"], torch::ones({128})));
  EXPECT_TRUE(torch::equal(pa["classifier.bias"], torch::zeros({2})));
  EXPECT_TRUE(torch::equal(pa["bert.embeddings.word_embeddings.weight"][0],
                           torch::zeros({128})));
  const double spread = pa["bert.encoder.layer.0.attention.self.query.weight"]
                            .std()
                            .item<double>();
  EXPECT_NEAR(spread, 0.02, 0.003);
  std::vector<std::string> heads = (*a)->head_parameter_names();
  EXPECT_EQ(heads,
            (std::vector<std::string>{"classifier.weight", "classifier.bias"}));
  for (const std::string& h : heads) EXPECT_TRUE(pa.contains(h)) << h;
}

TEST(EncodersTest, DropoutFollowsTrainAndEval) {
  const auto preset = FindPreset("preset:bert-tiny");
  ASSERT_TRUE(preset.ok());
  ModelConfig config = preset->config;
  config.vocab_size = kVocab;
  torch::manual_seed(10);
  auto model = CreateModel(config, HeadKind::kNone);
  ASSERT_TRUE(model.ok());
  const ModelInputs in = MakeInputs(0);
  (*model)->train();
  const torch::Tensor t1 = (*model)->forward(in);
  const torch::Tensor t2 = (*model)->forward(in);
  EXPECT_FALSE(torch::equal(t1, t2));
  (*model)->eval();
  EXPECT_TRUE(torch::equal((*model)->forward(in), (*model)->forward(in)));
  EXPECT_EQ(t1.sizes(), (std::vector<int64_t>{kBatch, kSeq, 128}));
}

}  // namespace
}  // namespace lathe
