// Internal to worker/models: the encoder families (BERT, RoBERTa and its
// XLM-RoBERTa/CamemBERT spellings, DistilBERT) as TaskModelImpl subclasses.
// Each registers its modules under the parameter names of the Hugging Face
// class it mirrors:
//   BertModel / RobertaModel / DistilBertModel (HeadKind::kNone): backbone
//     names without a prefix ("embeddings.word_embeddings.weight"), as those
//     classes save them; forward returns the last hidden states [B, T, H].
//   XForSequenceClassification, XForTokenClassification,
//   XForQuestionAnswering, XForMaskedLM: backbone under "bert." /
//     "roberta." / "distilbert.", heads as Hugging Face names them
//     (classifier, classifier.dense + classifier.out_proj, pre_classifier,
//     qa_outputs, cls.predictions.*, lm_head.*, vocab_*).
// The masked-LM decoders are tied to the word embeddings: the decoder weight
// is not a parameter of its own (tied_parameters() names it), so optimisers
// see each tensor once.
//
// Numerics follow the Hugging Face modelling code: additive attention masks
// of the dtype's lowest value (masked_fill for DistilBERT), the configured
// activation, LayerNorm epsilons, dropout placement; dropout is active only
// in train() mode. Use through the TaskModel interface (model.h).
#ifndef LATHE_WORKER_MODELS_ENCODERS_H_
#define LATHE_WORKER_MODELS_ENCODERS_H_

#include <string>

#include "absl/status/statusor.h"
#include "worker/models/family_models.h"
#include "worker/models/model.h"

namespace lathe {
namespace families {

// The Hugging Face class name for an encoder family's head, e.g.
// "RobertaForMaskedLM" or "XLMRobertaForSequenceClassification";
// INVALID_ARGUMENT for a head the family lacks (causal LM).
absl::StatusOr<std::string> EncoderClassName(const ModelConfig& config,
                                             HeadKind head);

}  // namespace families
}  // namespace lathe

#endif  // LATHE_WORKER_MODELS_ENCODERS_H_
