// Pieces of the causal-lm and masked-lm tasks that tests reach directly:
// generation, the LM losses, DPO's terms and masked-lm masking. LibTorch.
#ifndef LATHE_WORKER_TASKS_LM_TASKS_H_
#define LATHE_WORKER_TASKS_LM_TASKS_H_

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "worker/models/model.h"
#include "worker/tasks/lm_data.h"
#include "worker/tasks/task.h"

namespace lathe {

struct GenerationOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0;         // 0: greedy (argmax)
  int64_t top_k = 0;              // 0: off
  double top_p = 1;               // 1: off
  uint64_t seed = 42;             // Sampling draws; unused when greedy.
  std::optional<int64_t> eos_id;  // Generation stops after emitting it.
};

// Continues `prompt` (non-empty) with `model` (a causal-lm head, in eval
// mode), recomputing the whole forward each step (no cache). Returns the new
// ids only, the EOS that stopped generation excluded. Stops at max_new_tokens
// or when the sequence reaches the model's max_position_embeddings.
// Sampling: logits / temperature, keep the top_k largest, then the smallest
// set of most likely tokens whose probability reaches top_p; draws come from
// a generator seeded with `seed`, so equal options give equal outputs.
std::vector<int64_t> GenerateTokens(TaskModelImpl& model,
                                    const std::vector<int64_t>& prompt,
                                    const GenerationOptions& options,
                                    const torch::Device& device);

// `rows` (at least one) as one batch on `device`, padded to the longest
// row: input ids (`pad_id` on padding), attention mask, targets "labels"
// (-100 on padding); examples = the number of rows, tokens = their ids.
TaskBatch CollateLmExamples(const std::vector<const LmExample*>& rows,
                            int64_t pad_id, const torch::Device& device);

// Mean token cross-entropy of causal-lm logits [B, T, V] against labels
// [B, T] (Hugging Face's shift: logits[:, :-1] predict labels[:, 1:]),
// ignoring -100; zero (keeping the graph) when no label counts.
torch::Tensor CausalLmLoss(const torch::Tensor& logits,
                           const torch::Tensor& labels);

// The most logits the LM losses hold at once (float32: 1 GiB).
constexpr int64_t kMaxLmLogits = int64_t{1} << 28;

// Mean cross-entropy of `model`'s LM head (has_lm_head()) applied to the
// rows of `states` [N, H] (N >= 1) against `targets` [N], every row
// labelled. At most `max_logits` logits exist at once: beyond that the rows
// go through in chunks, and while gradients are recorded each chunk runs
// through RecomputeInBackward, so its logits are recomputed in the backward
// pass rather than kept.
torch::Tensor ProjectedLmLoss(TaskModelImpl& model, const torch::Tensor& states,
                              const torch::Tensor& targets, int64_t max_logits);

// The same mean as CausalLmLoss, from the hidden states that feed
// `model`'s lm_head (model.has_lm_head(); hidden [B, T, H]): only the
// labelled positions are projected onto the vocabulary, at most
// `max_logits` logits at a time. While gradients are recorded each chunk
// goes through RecomputeInBackward, so its logits are not kept for the
// backward pass but recomputed there: peak memory holds one chunk's logits
// instead of B x T x vocab.
torch::Tensor ChunkedCausalLmLoss(TaskModelImpl& model,
                                  const torch::Tensor& hidden,
                                  const torch::Tensor& labels,
                                  int64_t max_logits);

// Each row's summed log-probability of its labelled tokens under causal-lm
// logits [N, T, V] (labels [N, T], the same shift as CausalLmLoss, -100
// ignored): [N] float32; a row without labels sums to 0.
torch::Tensor SequenceLogProbs(const torch::Tensor& logits,
                               const torch::Tensor& labels);

// The same sums from the hidden states that feed `model`'s lm_head
// (model.has_lm_head(); hidden [N, T, H]), projecting only labelled
// positions, at most `max_logits` logits at a time; while gradients are
// recorded each chunk goes through RecomputeInBackward (as
// ChunkedCausalLmLoss).
torch::Tensor ProjectedSequenceLogProbs(TaskModelImpl& model,
                                        const torch::Tensor& hidden,
                                        const torch::Tensor& labels,
                                        int64_t max_logits);

// Direct Preference Optimization (Rafailov et al., 2023) on B pairs: the
// summed log-probabilities [B] of the chosen and rejected replies under the
// policy being trained and under the reference (the starting model).
//   chosen_rewards   = beta * (policy_chosen - reference_chosen)
//   rejected_rewards = beta * (policy_rejected - reference_rejected)
//   loss = mean(-log sigmoid(chosen_rewards - rejected_rewards))
// The rewards are detached from the graph.
struct DpoTerms {
  torch::Tensor loss;              // Scalar, float32.
  torch::Tensor chosen_rewards;    // [B]
  torch::Tensor rejected_rewards;  // [B]
};
DpoTerms DpoLoss(const torch::Tensor& policy_chosen,
                 const torch::Tensor& policy_rejected,
                 const torch::Tensor& reference_chosen,
                 const torch::Tensor& reference_rejected, double beta);

struct MlmMasking {
  torch::Tensor input_ids;  // With masked positions replaced.
  torch::Tensor labels;     // Original ids at masked positions, else -100.
};

// Hugging Face's masking for masked-lm on `input_ids` [B, T] (int64, CPU):
// each position where `maskable` [B, T] (bool) is true is chosen with
// probability `probability`; a chosen position becomes `mask_id` with
// probability 0.8, a uniformly random id in [0, vocab_size) with
// probability 0.1, and stays unchanged otherwise. Special tokens and
// padding must be false in `maskable`. Draws come from `generator` (a CPU
// generator; null: torch's default).
MlmMasking MaskTokens(const torch::Tensor& input_ids,
                      const torch::Tensor& maskable, double probability,
                      int64_t mask_id, int64_t vocab_size,
                      torch::Generator* generator);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_LM_TASKS_H_
