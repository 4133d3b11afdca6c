// causal-lm and masked-lm: readers, chat templates (the real Llama-2 and
// Qwen3 ones; the template engine has its own tests in
// tests/worker/templates), completion-only labels, masked-lm masking and
// greedy generation.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "nlohmann/json.hpp"
#include "worker/models/model.h"
#include "worker/tasks/chat_template_data.h"
#include "worker/tasks/lm_data.h"
#include "worker/tasks/lm_tasks.h"
#include "worker/tasks/task.h"
#include "worker/tokenizers/tokenizer.h"

namespace lathe {
namespace {

using nlohmann::json;

// The assets directory next to the test binary's bin/ (prepared by
// tools/prepare_assets.js); empty when absent.
std::string AssetsDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::filesystem::path p(std::string(buf, n));
  for (int up = 0; up < 4; ++up) {
    p = p.parent_path();
    if (std::filesystem::exists(p / "assets" / "gpt2")) {
      return (p / "assets").string();
    }
  }
  return "";
}

class TempFiles {
 public:
  TempFiles() {
    char tmpl[] = "/tmp/lathe_lm_test_XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  ~TempFiles() { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& content) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << content;
    return path;
  }

 private:
  std::string dir_;
};

// ------------------------------------------------------------- readers

TEST(LmReaderTest, ReadsEachFormat) {
  TempFiles t;
  LmColumns cols;
  auto pc = ReadLmRows(t.Write("a.jsonl",
                               "{\"prompt\": \"Hi\", \"completion\": \" yo\"}\n"
                               "\n"
                               "{\"prompt\": \"A\", \"completion\": \"B\"}\n"),
                       "a.jsonl", cols, false);
  ASSERT_TRUE(pc.ok()) << pc.status();
  EXPECT_EQ(pc->format, LmFormat::kPromptCompletion);
  ASSERT_EQ(pc->rows.size(), 2u);
  EXPECT_EQ(pc->rows[0].completion, " yo");
  EXPECT_EQ(pc->rows[1].line, 3);

  auto chat = ReadLmRows(
      t.Write("c.jsonl",
              "{\"messages\": [{\"role\": \"user\", \"content\": \"Q\"}, "
              "{\"role\": \"assistant\", \"content\": \"A\"}]}\n"),
      "c.jsonl", cols, false);
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->format, LmFormat::kChat);
  EXPECT_EQ(chat->rows[0].messages[1]["content"], "A");

  auto text =
      ReadLmRows(t.Write("t.txt", "first doc\nline two\n\n\n\nsecond\n"),
                 "t.txt", cols, false);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->format, LmFormat::kText);
  ASSERT_EQ(text->rows.size(), 2u);
  EXPECT_EQ(text->rows[0].text, "first doc\nline two");
  EXPECT_EQ(text->rows[1].text, "second");
  EXPECT_EQ(text->rows[1].line, 6);

  LmColumns renamed;
  renamed.text = "body";
  auto body = ReadLmRows(t.Write("b.jsonl", "{\"body\": \"x\"}\n"), "b.jsonl",
                         renamed, false);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(body->rows[0].text, "x");
}

TEST(LmReaderTest, ErrorsNameFileAndLine) {
  TempFiles t;
  LmColumns cols;
  auto mixed = ReadLmRows(t.Write("m.jsonl",
                                  "{\"prompt\": \"a\", \"completion\": \"b\"}\n"
                                  "{\"text\": \"c\"}\n"),
                          "m.jsonl", cols, false);
  ASSERT_FALSE(mixed.ok());
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mixed.status().message().substr(0, 10), "m.jsonl:2:");
  EXPECT_NE(mixed.status().message().find("mixed"), std::string::npos);

  auto missing = ReadLmRows(t.Write("n.jsonl", "{\"prompt\": \"a\"}\n"),
                            "n.jsonl", cols, false);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("n.jsonl:1: missing field "
                                            "\"completion\""),
            std::string::npos)
      << missing.status();
  // Predictions need no completion.
  EXPECT_TRUE(ReadLmRows(t.Write("n2.jsonl", "{\"prompt\": \"a\"}\n"),
                         "n2.jsonl", cols, true)
                  .ok());

  auto last_user = ReadLmRows(
      t.Write("u.jsonl",
              "{\"messages\": [{\"role\": \"user\", \"content\": \"Q\"}]}\n"),
      "u.jsonl", cols, false);
  ASSERT_FALSE(last_user.ok());
  EXPECT_NE(last_user.status().message().find("u.jsonl:1: the last message"),
            std::string::npos);

  auto bad_msg = ReadLmRows(
      t.Write("v.jsonl", "\n{\"messages\": [{\"role\": \"user\"}]}\n"),
      "v.jsonl", cols, true);
  ASSERT_FALSE(bad_msg.ok());
  EXPECT_NE(bad_msg.status().message().find("v.jsonl:2: message 0"),
            std::string::npos);

  auto bad_json =
      ReadLmRows(t.Write("w.jsonl", "{nope\n"), "w.jsonl", cols, false);
  ASSERT_FALSE(bad_json.ok());
  EXPECT_NE(bad_json.status().message().find("w.jsonl:1:"), std::string::npos);

  EXPECT_FALSE(
      ReadLmRows(t.Write("e.jsonl", "\n"), "e.jsonl", cols, false).ok());
}

// ------------------------------------------------------------- templates

std::string Render(const std::string& source, const json& messages,
                   bool add_generation_prompt) {
  auto t = ChatTemplate::Parse(source);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return "";
  ChatTemplateVariables v;
  v.bos_token = "<s>";
  v.eos_token = "</s>";
  v.add_generation_prompt = add_generation_prompt;
  auto r = (*t)->Render(messages, v);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : "";
}

const json kTwoTurns = json::parse(R"([
  {"role": "system", "content": "Be brief."},
  {"role": "user", "content": "Hi"},
  {"role": "assistant", "content": "Hello!"},
  {"role": "user", "content": "Capital of France?"},
  {"role": "assistant", "content": "Paris"}])");

// meta-llama/Llama-2-7b-chat-hf's tokenizer_config.json chat_template (the
// JSON string's "\\n" is the two characters backslash, n).
const char kLlama2Template[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = "
    "messages[1:] %}{% set system_message = messages[0]['content'] %}{% else "
    "%}{% set loop_messages = messages %}{% set system_message = false %}{% "
    "endif %}{% for message in loop_messages %}{% if (message['role'] == "
    "'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
    "roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% "
    "if loop.index0 == 0 and system_message != false %}{% set content = "
    "'<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
    "message['content'] %}{% else %}{% set content = message['content'] %}{% "
    "endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
    "content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' "
    "%}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

TEST(ChatTemplateTest, RealLlama2TemplateOnTwoTurns) {
  // By hand from the template: the system prompt goes into the first user
  // turn, each user turn is "<s>[INST] ... [/INST]", each reply " ... </s>".
  EXPECT_EQ(Render(kLlama2Template, kTwoTurns, false),
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! "
            "</s><s>[INST] Capital of France? [/INST] Paris </s>");
  json no_system = kTwoTurns;
  no_system.erase(no_system.begin());
  EXPECT_EQ(Render(kLlama2Template, no_system, false),
            "<s>[INST] Hi [/INST] Hello! </s><s>[INST] Capital of France? "
            "[/INST] Paris </s>");
  auto t = ChatTemplate::Parse(kLlama2Template);
  ASSERT_TRUE(t.ok());
  auto bad = (*t)->Render(json::parse(R"([{"role": "user", "content": "a"},
                      {"role": "user", "content": "b"}])"),
                          {});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("Conversation roles must alternate"),
            std::string::npos);
}

TEST(ChatTemplateTest, RealQwen3Template) {
  const std::string assets = AssetsDir();
  if (assets.empty()) GTEST_SKIP() << "assets not prepared";
  auto tok = Tokenizer::FromDirectory(assets + "/qwen3");
  ASSERT_TRUE(tok.ok()) << tok.status();
  ASSERT_TRUE((*tok)->chat_template().has_value());
  auto chat = ChatFormatter::ForTokenizer(**tok);
  ASSERT_TRUE(chat.ok()) << chat.status();
  ASSERT_TRUE((*chat)->uses_template());
  const json msgs = json::parse(R"([{"role": "user", "content": "Hi"},
                                     {"role": "assistant", "content": "Hello"}])");
  // By hand: the last reply after the last user query gets an empty think
  // block; the generation prompt opens the assistant turn.
  auto split = (*chat)->SplitForTraining(msgs);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(split->first,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(split->second, "<think>\n\n</think>\n\nHello<|im_end|>\n");
  auto with_system = (*chat)->PromptForGeneration(json::parse(
      R"([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}])"));
  ASSERT_TRUE(with_system.ok()) << with_system.status();
  EXPECT_EQ(*with_system,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"
            "<|im_start|>assistant\n");
}

// ------------------------------------------------------------- labels

TEST(LmExampleTest, CompletionOnlyLabelsMaskThePrompt) {
  const std::string assets = AssetsDir();
  if (assets.empty()) GTEST_SKIP() << "assets not prepared";
  auto tok = Tokenizer::FromDirectory(assets + "/gpt2");
  ASSERT_TRUE(tok.ok()) << tok.status();
  LmRow row;
  row.prompt = "The capital of France is";
  row.completion = " Paris";
  const auto prompt = (*tok)->Encode(row.prompt, std::nullopt, true).ids;
  const auto reply = (*tok)->Encode(row.completion, std::nullopt, false).ids;
  const int64_t eos = *(*tok)->eos_id();

  auto ex = EncodeLmExample(**tok, nullptr, LmFormat::kPromptCompletion, row,
                            128, true);
  ASSERT_TRUE(ex.ok()) << ex.status();
  ASSERT_EQ(ex->ids.size(), prompt.size() + reply.size() + 1);
  EXPECT_EQ(ex->ids.back(), eos);
  for (size_t i = 0; i < ex->ids.size(); ++i) {
    EXPECT_EQ(ex->labels[i], i < prompt.size() ? kIgnoreLabel : ex->ids[i])
        << i;
  }
  auto full = EncodeLmExample(**tok, nullptr, LmFormat::kPromptCompletion, row,
                              128, false);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->labels, full->ids);
  // Truncation cuts the end.
  auto cut = EncodeLmExample(**tok, nullptr, LmFormat::kPromptCompletion, row,
                             3, true);
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(cut->ids, std::vector<int64_t>(prompt.begin(), prompt.begin() + 3));

  // Raw text trains on every token.
  LmRow text;
  text.text = "Just some text.";
  auto t = EncodeLmExample(**tok, nullptr, LmFormat::kText, text, 128, true);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->labels, t->ids);
  EXPECT_EQ(t->ids.back(), eos);
}

TEST(LmExampleTest, ChatWithLlama2TemplateMasksEverythingBeforeTheReply) {
  const std::string assets = AssetsDir();
  if (assets.empty()) GTEST_SKIP() << "assets not prepared";
  auto tok = Tokenizer::FromDirectory(assets + "/llama2");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto chat = ChatFormatter::WithTemplate(**tok, kLlama2Template);
  ASSERT_TRUE(chat.ok()) << chat.status();
  auto split = (*chat)->SplitForTraining(kTwoTurns);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(split->first,
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! "
            "</s><s>[INST] Capital of France? [/INST]");
  EXPECT_EQ(split->second, " Paris </s>");

  LmRow row;
  row.messages = kTwoTurns;
  auto ex =
      EncodeLmExample(**tok, chat->get(), LmFormat::kChat, row, 512, true);
  ASSERT_TRUE(ex.ok()) << ex.status();
  const int64_t bos = *(*tok)->bos_id(), eos = *(*tok)->eos_id();
  // The template writes "<s>" itself: one BOS at the start, not two.
  ASSERT_GE(ex->ids.size(), 3u);
  EXPECT_EQ(ex->ids[0], bos);
  EXPECT_NE(ex->ids[1], bos);
  EXPECT_EQ(ex->ids.back(), eos);
  const auto prompt = (*tok)->Encode(split->first, std::nullopt, false).ids;
  size_t trained = 0;
  for (size_t i = 0; i < ex->ids.size(); ++i) {
    if (i < prompt.size()) {
      EXPECT_EQ(ex->labels[i], kIgnoreLabel) << i;
    } else {
      EXPECT_EQ(ex->labels[i], ex->ids[i]) << i;
      ++trained;
    }
  }
  EXPECT_GE(trained, 2u);  // "Paris" and "</s>" at least.
  // The reply is " Paris </s>": the answer, then EOS (skipped in decoding).
  const std::string reply = (*tok)->Decode(
      std::vector<int64_t>(ex->ids.begin() + prompt.size(), ex->ids.end()),
      true);
  EXPECT_EQ(absl::StripAsciiWhitespace(reply), "Paris") << reply;
}

TEST(LmExampleTest, DefaultChatFormatWithoutTemplate) {
  const std::string assets = AssetsDir();
  if (assets.empty()) GTEST_SKIP() << "assets not prepared";
  auto tok = Tokenizer::FromDirectory(assets + "/gpt2");
  ASSERT_TRUE(tok.ok()) << tok.status();
  ASSERT_FALSE((*tok)->chat_template().has_value());
  auto chat = ChatFormatter::ForTokenizer(**tok);
  ASSERT_TRUE(chat.ok());
  EXPECT_FALSE((*chat)->uses_template());
  auto split = (*chat)->SplitForTraining(kTwoTurns);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(split->first,
            "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello!"
            "<|endoftext|>\n<|user|>\nCapital of France?\n<|assistant|>\n");
  EXPECT_EQ(split->second, "Paris");
  LmRow row;
  row.messages = kTwoTurns;
  auto prompt = EncodeLmPrompt(**tok, chat->get(), LmFormat::kChat, row, 1000);
  ASSERT_TRUE(prompt.ok());
  EXPECT_EQ(*prompt, (*tok)->Encode(split->first, std::nullopt, true).ids);
}

// ------------------------------------------------------------- masking

TEST(MaskedLmTest, MaskingFollowsTheEightyTenTenRuleAndSparesSpecials) {
  const int64_t rows = 64, cols = 512, mask_id = 3, vocab = 1000, id = 7;
  torch::Tensor ids = torch::full({rows, cols}, id, torch::kLong);
  torch::Tensor maskable = torch::ones({rows, cols}, torch::kBool);
  // [CLS] and [SEP] columns, and padding at the end of every other row.
  maskable.index_put_({torch::indexing::Slice(), 0}, false);
  maskable.index_put_({torch::indexing::Slice(), cols - 1}, false);
  maskable.index_put_({torch::indexing::Slice(0, rows, 2),
                       torch::indexing::Slice(cols / 2, cols)},
                      false);
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(123);
  MlmMasking m = MaskTokens(ids, maskable, 0.15, mask_id, vocab, &gen);

  torch::Tensor chosen = m.labels != kIgnoreLabel;
  EXPECT_EQ((chosen & ~maskable).sum().item<int64_t>(), 0);
  EXPECT_TRUE(torch::equal(m.input_ids.masked_select(~maskable),
                           ids.masked_select(~maskable)));
  EXPECT_TRUE((m.labels.masked_select(chosen) == id).all().item<bool>());
  const double n_maskable = maskable.sum().item<double>();
  const double n_chosen = chosen.sum().item<double>();
  EXPECT_NEAR(n_chosen / n_maskable, 0.15, 0.01);
  const double masked =
      (chosen & (m.input_ids == mask_id)).sum().item<double>();
  const double same = (chosen & (m.input_ids == id)).sum().item<double>();
  const double random = n_chosen - masked - same;
  EXPECT_NEAR(masked / n_chosen, 0.8, 0.02);
  EXPECT_NEAR(random / n_chosen, 0.1, 0.02);
  EXPECT_NEAR(same / n_chosen, 0.1, 0.02);
  EXPECT_TRUE(((m.input_ids >= 0) & (m.input_ids < vocab)).all().item<bool>());
  // Unchosen positions are untouched.
  EXPECT_TRUE(torch::equal(m.input_ids.masked_select(~chosen),
                           ids.masked_select(~chosen)));

  // The same generator seed gives the same masks.
  torch::Generator again = at::make_generator<at::CPUGeneratorImpl>(123);
  MlmMasking m2 = MaskTokens(ids, maskable, 0.15, mask_id, vocab, &again);
  EXPECT_TRUE(torch::equal(m.input_ids, m2.input_ids));
  EXPECT_TRUE(torch::equal(m.labels, m2.labels));
}

// ------------------------------------------------------------- generation

TaskModel TinyGpt2() {
  auto preset = FindPreset("preset:gpt2-tiny");
  EXPECT_TRUE(preset.ok());
  ModelConfig c = preset->config;
  c.vocab_size = 40;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  c.bos_token_id = 0;
  c.eos_token_id = 0;
  c.pad_token_id.reset();
  torch::manual_seed(11);
  auto model = CreateModel(c, HeadKind::kCausalLm);
  EXPECT_TRUE(model.ok()) << model.status();
  (*model)->eval();
  return *model;
}

TEST(GenerationTest, GreedyIsDeterministicAndStopsAtEos) {
  TaskModel model = TinyGpt2();
  const torch::Device cpu(torch::kCPU);
  GenerationOptions o;
  o.max_new_tokens = 12;
  const std::vector<int64_t> prompt = {1, 2, 3};
  const auto a = GenerateTokens(*model, prompt, o, cpu);
  const auto b = GenerateTokens(*model, prompt, o, cpu);
  ASSERT_EQ(a.size(), 12u);
  EXPECT_EQ(a, b);
  // Greedy is the argmax of a full forward at each step.
  {
    torch::NoGradGuard ng;
    ModelInputs in;
    in.input_ids = torch::tensor(prompt, torch::kLong).view({1, 3});
    in.attention_mask = torch::ones({1, 3}, torch::kLong);
    EXPECT_EQ(model->forward(in)[0][2].argmax().item<int64_t>(), a[0]);
  }
  // With the first new token of a position k > 0 as EOS, generation stops
  // right before it, without emitting it.
  size_t k = 1;
  while (k < a.size() &&
         std::find(a.begin(), a.begin() + k, a[k]) != a.begin() + k) {
    ++k;
  }
  ASSERT_LT(k, a.size()) << "the tiny model repeats one token";
  o.eos_id = a[k];
  const auto stopped = GenerateTokens(*model, prompt, o, cpu);
  EXPECT_EQ(stopped, std::vector<int64_t>(a.begin(), a.begin() + k));
  // The model's positions bound the length.
  o.eos_id.reset();
  o.max_new_tokens = 1000;
  EXPECT_EQ(GenerateTokens(*model, prompt, o, cpu).size(), 64u - 3u);
}

TEST(GenerationTest, SamplingIsSeededAndTopKOneIsGreedy) {
  TaskModel model = TinyGpt2();
  const torch::Device cpu(torch::kCPU);
  GenerationOptions greedy;
  greedy.max_new_tokens = 10;
  GenerationOptions o = greedy;
  o.temperature = 1.5;
  o.top_p = 0.9;
  o.seed = 5;
  const std::vector<int64_t> prompt = {4, 5};
  EXPECT_EQ(GenerateTokens(*model, prompt, o, cpu),
            GenerateTokens(*model, prompt, o, cpu));
  o.top_k = 1;
  EXPECT_EQ(GenerateTokens(*model, prompt, o, cpu),
            GenerateTokens(*model, prompt, greedy, cpu));
}

TEST(CausalLmLossTest, ShiftsAndIgnoresMaskedLabels) {
  torch::manual_seed(3);
  torch::Tensor logits = torch::randn({2, 4, 6});
  torch::Tensor labels =
      torch::tensor({{-100, -100, 2, 3}, {-100, 1, -100, -100}}, torch::kLong);
  // By hand: positions (0,1)->2, (0,2)->3, (1,0)->1.
  const double expected =
      (-torch::log_softmax(logits[0][1], -1)[2].item<double>() -
       torch::log_softmax(logits[0][2], -1)[3].item<double>() -
       torch::log_softmax(logits[1][0], -1)[1].item<double>()) /
      3;
  EXPECT_NEAR(CausalLmLoss(logits, labels).item<double>(), expected, 1e-5);
  EXPECT_EQ(CausalLmLoss(logits, torch::full({2, 4}, -100, torch::kLong))
                .item<double>(),
            0.0);
}

}  // namespace
}  // namespace lathe
